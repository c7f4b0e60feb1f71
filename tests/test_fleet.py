"""The fleet: node resources, and a real three-node Ray cluster with embedded Gemma workers."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from memwarden.core.admission import node_resources
from memwarden.core.config import parse_config_data
from memwarden.core.errors import InsufficientMemory, ProviderUnavailable
from memwarden.core.types import DeviceSnapshot, MemoryPool, ModelRef, PoolKind
from memwarden.core.units import format_bytes
from memwarden.plugins.gguf_estimator import estimate_file

GiB = 1024**3
MiB = 1024**2


def pool(pool_id: str, kind: PoolKind, total: int, available: int) -> MemoryPool:
    return MemoryPool(
        id=pool_id,
        name=pool_id,
        kind=kind,
        total_bytes=total,
        used_bytes=total - available,
        available_bytes=available,
        source="test",
    )


def test_node_resources_are_available_memory_less_the_margin_per_pool_kind():
    snapshot = DeviceSnapshot(
        pools=(
            pool("system", PoolKind.SYSTEM, 64 * GiB, 40 * GiB),
            pool("gpu0", PoolKind.GPU, 24 * GiB, 20 * GiB),
            pool("gpu1", PoolKind.GPU, 24 * GiB, 24 * GiB),
        ),
        taken_at=0.0,
    )
    config = parse_config_data({"budget": {"safety_margin_percent": 10}}, None)
    assert node_resources(snapshot, config) == {
        "llm_ram_bytes": 40 * GiB - int(64 * GiB * 0.1),
        "llm_gpu_bytes": 20 * GiB + 24 * GiB - 2 * int(24 * GiB * 0.1),
    }


def test_node_resources_are_capped_by_max_managed_memory():
    snapshot = DeviceSnapshot(pools=(pool("unified", PoolKind.UNIFIED, 32 * GiB, 30 * GiB),))
    config = parse_config_data(
        {"budget": {"safety_margin_percent": 0}, "pressure": {"max_managed_memory": "8 GiB"}},
        None,
    )
    assert node_resources(snapshot, config) == {"llm_gpu_bytes": 8 * GiB}


def test_fleet_node_args_prints_ray_start_with_the_resources(run_cli, write_config):
    config = write_config('[pressure]\nmax_managed_memory = "1 GiB"\n')
    result = run_cli("--config", str(config), "fleet", "node-args", "--json", "--address", "h:1")
    assert result.exit_code == 0
    data = result.json()
    assert data["resources"] == {"llm_ram_bytes": GiB}
    assert data["args"] == ["--address", "h:1", "--resources", json.dumps({"llm_ram_bytes": GiB})]


def test_fleet_status_without_the_ray_provider_says_how_to_configure_it(run_cli):
    result = run_cli("fleet", "status")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: fleet: the ray provider is not configured\n"
        "  hint: set [plugins.ray] address in the config\n"
    )


def test_ray_provider_is_not_registered_without_an_address():
    from memwarden.core.warden import Warden

    warden = Warden(parse_config_data({}, None))
    assert "ray" not in warden.providers()


# -- a real cluster --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, gemma_gguf):
    """Head (no LLM room), node A (room for one Gemma), node B (room for two); an agent on each,
    node B's capping its managed models at one and a half Gemmas."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from memwarden.plugins.ray_provider import RayOptions, RayProvider, start_agent

    models = tmp_path_factory.mktemp("fleet-models")
    for name in ("gemma-a", "gemma-b", "gemma-c"):
        target = models / f"{name}.gguf"
        try:
            os.link(gemma_gguf, target)
        except OSError:
            shutil.copyfile(gemma_gguf, target)
    llamacpp = {"models_dir": str(models), "default_context_tokens": 1024, "threads": 1}
    options = RayOptions(address="auto", placement_timeout_s=60.0, llamacpp=llamacpp)
    provider = RayProvider(options)
    one = provider.estimate_bytes("gemma-a", 1024, {})
    # The managed-memory cap counts what a loaded model holds, its committed figure.
    committed = estimate_file(
        ModelRef(name="gemma-a"), models / "gemma-a.gguf", 1024, {}
    ).total_bytes
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {"llm_ram_bytes": 1}},
    )
    node_a = cluster.add_node(num_cpus=1, resources={"llm_ram_bytes": int(one * 1.5)})
    node_b = cluster.add_node(num_cpus=1, resources={"llm_ram_bytes": int(one * 2.5)})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="memwarden", log_to_driver=False)
    provider.options = RayOptions(
        address=cluster.address, placement_timeout_s=60.0, llamacpp=llamacpp
    )
    policies = {
        "models": {
            "gemma-a": {"priority": 1},
            "gemma-b": {"priority": 5},
            "gemma-c": {"priority": 9},
        }
    }
    agents = {}
    for node in (node_a, node_b):
        config = dict(policies)
        if node is node_b:
            config["pressure"] = {"max_managed_memory": int(committed * 1.5)}
        agents[node.node_id] = start_agent(node.node_id, config, interval_s=None)
    try:
        yield {
            "ray": ray,
            "cluster": cluster,
            "provider": provider,
            "one": one,
            "node_a": node_a,
            "node_b": node_b,
            "agents": agents,
        }
    finally:
        provider.unload_all()
        for agent in agents.values():
            ray.kill(agent)
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_models_are_placed_where_their_estimate_fits(fleet):
    provider = fleet["provider"]
    ray = fleet["ray"]
    placed = {m: provider.load(m).name for m in ("gemma-a", "gemma-b", "gemma-c")}
    assert placed == {"gemma-a": "gemma-a", "gemma-b": "gemma-b", "gemma-c": "gemma-c"}
    nodes = sorted(
        [provider.node_of(m) for m in placed].count(n.node_id)
        for n in (fleet["node_a"], fleet["node_b"])
    )
    # Node A takes one Gemma and node B two; the head declares no room and takes none.
    assert nodes == [1, 2]
    one = fleet["one"]
    declared = 1 + int(one * 1.5) + int(one * 2.5)
    assert ray.available_resources()["llm_ram_bytes"] == declared - 3 * one


@pytest.mark.slow
def test_pressure_on_one_node_evicts_there_by_priority(fleet):
    provider = fleet["provider"]
    ray = fleet["ray"]
    node_b = fleet["node_b"].node_id
    on_b = sorted(m for m in ("gemma-a", "gemma-b", "gemma-c") if provider.node_of(m) == node_b)
    assert len(on_b) == 2
    priorities = {"gemma-a": 1, "gemma-b": 5, "gemma-c": 9}
    expected = min(on_b, key=priorities.__getitem__)
    report_a = ray.get(fleet["agents"][fleet["node_a"].node_id].tick.remote())
    report_b = ray.get(fleet["agents"][node_b].tick.remote())
    assert report_a["evicted"] == []
    assert report_b["evicted"] == [expected]
    assert sorted(m["name"] for m in report_b["models"]) == [m for m in on_b if m != expected]
    assert sorted(m.name for m in provider.loaded_models()) == sorted(
        {"gemma-a", "gemma-b", "gemma-c"} - {expected}
    )


@pytest.mark.slow
def test_a_model_too_big_for_every_node_is_refused(fleet):
    provider = fleet["provider"]
    wide = {"parallel": 64}
    needed = provider.estimate_bytes("gemma-a", 32768, wide)
    assert needed > int(fleet["one"] * 2.5)
    with pytest.raises(InsufficientMemory) as caught:
        provider.load("gemma-a", context_tokens=32768, options=wide)
    assert caught.value.args[0] == (
        f"ray: gemma-a at 32768 tokens needs {format_bytes(needed)} of llm_ram_bytes; "
        f"the largest node declares {format_bytes(int(fleet['one'] * 2.5))}"
    )


@pytest.mark.slow
def test_a_node_lost_mid_request_fails_it_and_the_next_request_places_the_model_again(fleet):
    provider = fleet["provider"]
    cluster = fleet["cluster"]
    node_a = fleet["node_a"]
    victim = next(
        m.name for m in provider.loaded_models() if provider.node_of(m.name) == node_a.node_id
    )
    # A request in flight: its first piece has arrived when the node goes.
    answers = provider.stream(victim, {"prompt": "Once upon a time", "max_tokens": 512})
    assert "piece" in next(answers)
    cluster.remove_node(node_a)
    with pytest.raises(ProviderUnavailable) as caught:
        for _ in answers:
            pass
    assert (
        caught.value.message
        == f"ray: {victim} was lost with node {node_a.node_id} during the request"
    )
    assert provider.lost_models() == {victim: node_a.node_id}
    for model in [m.name for m in provider.loaded_models() if m.name != victim]:
        provider.unload(model)
    answer = provider.generate(victim, "Hello", max_tokens=4)
    assert answer.model == victim
    assert provider.node_of(victim) == fleet["node_b"].node_id


@pytest.mark.slow
def test_the_front_door_on_the_head_serves_a_fleet_model_and_shows_every_node(fleet, tmp_path):
    import httpx
    import openai

    from memwarden.core.warden import Warden
    from memwarden.serve.app import FrontDoor

    provider = fleet["provider"]
    raw = {
        "state": {"path": str(tmp_path / "state.db")},
        "plugins": {
            "disabled": ["ollama", "lmstudio", "llamacpp"],
            "ray": {
                "address": provider.options.address,
                "placement_timeout_s": 3.0,
                "llamacpp": dict(provider.options.llamacpp),
            },
        },
    }
    door = FrontDoor(Warden(parse_config_data(raw, None)), port=0, monitor=False, psi=False)
    with door:
        client = openai.OpenAI(base_url=f"{door.url}/v1", api_key="unused", max_retries=0)
        answer = client.completions.create(
            model="gemma-c", prompt="The capital of France is", max_tokens=8
        )
        status = httpx.get(f"{door.url}/memory/status", timeout=60).json()
        shown = _dashboard_nodes(door.url)
        # Node B holds two models, the most it has room for; node A is gone.
        busy = httpx.post(
            f"{door.url}/v1/completions",
            json={"model": "gemma-a", "prompt": "Hi", "max_tokens": 2},
            timeout=60,
        )
    assert (answer.choices[0].text, answer.usage.completion_tokens) == (
        " the capital of the country of France.",
        8,
    )
    assert (busy.status_code, busy.headers["retry-after"]) == (503, "2")
    assert "no node took gemma-a" in busy.json()["error"]["message"]
    live = {n["node_id"] for n in provider.nodes()}
    assert {n["node_id"] for n in status["nodes"]} == live
    node_b = next(n for n in status["nodes"] if n["node_id"] == fleet["node_b"].node_id)
    assert "gemma-c" in [m["name"] for m in node_b["models"]]
    if shown is not None:
        assert shown == sorted(n["node_id"][:12] for n in status["nodes"])


def _dashboard_nodes(url: str) -> list[str] | None:
    """The node ids the dashboard's fleet table shows, in headless Chromium (None without it)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            tab = browser.new_page()
            tab.goto(f"{url}/?every=500")
            tab.wait_for_selector("#nodes tbody tr", timeout=60_000)
            cells = tab.query_selector_all('#nodes tbody [data-field="node"]')
            return sorted(c.inner_text() for c in cells)
        finally:
            browser.close()


# -- the simulated fleet (benchmarks/fleet_sim.py) -------------------------------------------


def _fleet_sim():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "fleet_sim.py"
    spec = importlib.util.spec_from_file_location("fleet_sim", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fleet_sim"] = module
    spec.loader.exec_module(module)
    return module


def test_simulated_fleet_placed_by_estimates_has_no_out_of_memory_event():
    row = _fleet_sim().run("memwarden", 60, 3000, seed=3)
    assert (row["oom_events"], row["lost"]) == (0, 0)


def test_simulated_fleet_placed_by_count_runs_hosts_out_of_memory():
    row = _fleet_sim().run("count", 60, 3000, seed=3, per_host=3)
    assert (row["oom_events"], row["lost"]) == (87, 87)
