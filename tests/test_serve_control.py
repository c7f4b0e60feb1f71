"""`memwarden serve`'s control API, /metrics and access rules."""

from __future__ import annotations

import attrs
import httpx
import openai
import pytest
from front_door import front_door, wait_for
from ollama_server import ANSWER

from memwarden.core.config import ByteSize, Config
from memwarden.core.warden import Warden
from memwarden.serve.app import FrontDoor, TokenRequired, configured_token

LLAMA_LOADED_BYTES = 2019393189 + 4096 * 2048


@pytest.fixture
def door(tmp_path):
    with front_door(tmp_path) as (door, fake), httpx.Client(base_url=door.url, timeout=30) as http:
        yield door, http, fake


def chat(url: str, model: str, api_key: str = "unused") -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "why"}]
    )
    return answer.choices[0].message.content


def test_status_lists_the_loaded_model_with_its_bytes(door):
    server, http, _ = door
    chat(server.url, "llama3.2")
    [model] = http.get("/memory/status").json()["models"]
    assert (model["name"], model["total_bytes"], model["requests_in_flight"]) == (
        "llama3.2:latest",
        LLAMA_LOADED_BYTES,
        0,
    )


def test_status_shows_each_pool_with_its_level(door):
    _, http, _ = door
    status = http.get("/memory/status").json()
    assert ([p["id"] for p in status["pools"]], status["level"]) == (["system"], "NORMAL")


def test_load_endpoint_loads_through_admission(door):
    _, http, fake = door
    answer = http.post("/memory/components/qwen3/load", params={"ctx": 8192})
    assert (answer.status_code, answer.json()["loaded"]["context_tokens"]) == (200, 8192)
    assert sorted(fake.loaded) == ["qwen3:latest"]


def test_unload_endpoint_unloads_the_model(door):
    server, http, fake = door
    chat(server.url, "llama3.2")
    answer = http.post("/memory/components/llama3.2/unload")
    assert (answer.status_code, fake.loaded) == (200, {})
    assert http.get("/memory/status").json()["models"] == []


def test_unloading_a_model_serving_a_stream_is_refused_with_409(door):
    server, http, fake = door
    fake.hold_streams.clear()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model="llama3.2", messages=[{"role": "user", "content": "why"}], stream=True
    )
    next(iter(stream))
    try:
        answer = http.post("/memory/components/llama3.2/unload")
    finally:
        fake.hold_streams.set()
        list(stream)
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "model-busy")


def test_unloading_a_model_that_is_not_loaded_is_404(door):
    _, http, _ = door
    answer = http.post("/memory/components/qwen3/unload")
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "model-not-found")


def test_optimize_dry_run_at_normal_pressure_proposes_nothing(door):
    _, http, _ = door
    answer = http.post("/memory/optimize", params={"dry_run": "1"}).json()
    assert (answer["dry_run"], answer["level"], answer["actions"]) == (True, "NORMAL", [])


def test_optimize_over_the_cap_runs_one_ladder_round(tmp_path):
    config = '[pressure]\nmax_managed_memory = "4GiB"\n'
    with (
        front_door(tmp_path, config=config) as (door, fake),
        httpx.Client(base_url=door.url, timeout=30) as http,
    ):
        chat(door.url, "llama3.2")
        # The cap shrinks under the loaded model: managed memory is now over it.
        door.warden.config = with_cap(door.warden.config, "1GiB")
        plan = http.post("/memory/optimize", params={"dry_run": "1"}).json()
        done = http.post("/memory/optimize").json()
    assert {a["model"] for a in plan["actions"] if a["kind"] == "unload"} == {"llama3.2:latest"}
    taken = [(o["action"]["kind"], o["ok"]) for o in done["round"]["outcomes"]]
    assert taken[:2] == [("refuse-loads", True), ("shrink-context", True)]
    assert fake.loaded["llama3.2:latest"].context_length == 2048


def with_cap(config: Config, cap: str) -> Config:
    pressure = attrs.evolve(config.pressure, max_managed_memory=ByteSize.parse(cap))
    return attrs.evolve(config, pressure=pressure)


def test_emergency_cleanup_unloads_every_model_that_is_not_critical(tmp_path):
    config = '[models."qwen3:latest"]\ncritical = true\n'
    with front_door(tmp_path, config=config) as (door, fake):
        chat(door.url, "llama3.2")
        chat(door.url, "qwen3")
        with httpx.Client(base_url=door.url, timeout=30) as http:
            answer = http.post("/memory/emergency-cleanup").json()
    assert ([m["name"] for m in answer["unloaded"]], answer["kept"]) == (
        ["llama3.2:latest"],
        ["qwen3:latest is critical"],
    )
    assert sorted(fake.loaded) == ["qwen3:latest"]


def test_health_reports_each_provider(door):
    _, http, _ = door
    health = http.get("/health").json()
    assert (health["status"], [(p["name"], p["reachable"]) for p in health["providers"]]) == (
        "ok",
        [("ollama", True)],
    )


def test_report_carries_the_action_log(door):
    server, http, _ = door
    chat(server.url, "llama3.2")
    events = http.get("/memory/report").json()["events"]
    assert [e["kind"] for e in events if e["kind"] == "model-loaded"] == ["model-loaded"]


def test_components_lists_loaded_and_available_models(door):
    server, http, _ = door
    chat(server.url, "qwen3")
    components = http.get("/memory/components").json()
    assert [m["name"] for m in components["loaded"]] == ["qwen3:latest"]
    assert len(components["available"]) == 3


def test_metrics_show_committed_bytes_per_model(door):
    server, http, _ = door
    chat(server.url, "llama3.2")
    text = http.get("/metrics").text
    line = 'memwarden_model_committed_bytes{model="llama3.2:latest",provider="ollama"}'
    [value] = [row.split(" ")[-1] for row in text.splitlines() if row.startswith(line)]
    assert float(value) == LLAMA_LOADED_BYTES


def test_metrics_show_each_pools_level(door):
    _, http, _ = door
    http.get("/memory/status")
    assert 'memwarden_pool_level{pool="system"} 0.0' in http.get("/metrics").text


# -- access --------------------------------------------------------------------------------


def test_serve_refuses_to_listen_beyond_loopback_without_a_token():
    with pytest.raises(TokenRequired) as caught:
        FrontDoor(Warden(Config()), host="0.0.0.0", port=0, monitor=False)
    assert "without a token" in caught.value.message
    assert "MEMWARDEN_TOKEN" in caught.value.hint


def test_the_cli_exits_2_when_asked_to_listen_beyond_loopback_without_a_token(run_cli):
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 2
    assert "memwarden serve would listen on 0.0.0.0" in result.stderr


def test_the_token_comes_from_the_environment_first(monkeypatch, write_config):
    from memwarden.core.config import load_config

    monkeypatch.setenv("MEMWARDEN_TOKEN", "from-env")
    warden = Warden(load_config(write_config('[serve]\ntoken = "from-config"\n')))
    assert configured_token(warden) == "from-env"


@pytest.fixture
def guarded(tmp_path):
    with (
        front_door(tmp_path, token="s3cret") as (door, fake),
        httpx.Client(base_url=door.url, timeout=30) as http,
    ):
        yield door, http, fake


def test_a_state_changing_request_without_the_token_is_401(guarded):
    _, http, fake = guarded
    answer = http.post("/memory/components/qwen3/load")
    assert (answer.status_code, answer.json()["error"]["code"], fake.loaded) == (
        401,
        "token_required",
        {},
    )


def test_a_state_changing_request_with_a_wrong_token_is_401(guarded):
    _, http, _ = guarded
    answer = http.post("/memory/emergency-cleanup", headers={"Authorization": "Bearer nope"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (401, "token_invalid")


def test_a_state_changing_request_with_the_token_is_served(guarded):
    _, http, fake = guarded
    answer = http.post("/memory/components/qwen3/load", headers={"Authorization": "Bearer s3cret"})
    assert (answer.status_code, sorted(fake.loaded)) == (200, ["qwen3:latest"])


def test_reads_need_no_token(guarded):
    _, http, _ = guarded
    assert http.get("/memory/status").status_code == 200


def test_an_openai_client_passes_the_token_as_its_api_key(guarded):
    server, _, _ = guarded
    assert chat(server.url, "llama3.2", api_key="s3cret") == ANSWER


def test_an_openai_client_without_the_token_is_refused(guarded):
    server, _, _ = guarded
    with pytest.raises(openai.AuthenticationError):
        chat(server.url, "llama3.2", api_key="wrong")


def test_the_monitor_samples_into_the_pressure_history(tmp_path):
    with (
        front_door(tmp_path, monitor=True) as (door, _),
        httpx.Client(base_url=door.url, timeout=30) as http,
    ):
        assert wait_for(lambda: len(http.get("/memory/report").json()["history"]) >= 1)
        [entry, *_] = http.get("/memory/report").json()["history"]
    assert (entry["level"], list(entry["pools"])) == ("NORMAL", ["system"])


def test_metrics_show_the_estimate_error_of_a_load(door):
    server, http, _ = door
    answer = http.post("/memory/components/llama3.2/load").json()
    ref = server.warden.model_ref("llama3.2")
    estimated = server.warden.estimate(ref, 4096).total_bytes
    line = 'memwarden_estimate_error_ratio{model="llama3.2:latest",provider="ollama"}'
    rows = http.get("/metrics").text.splitlines()
    [value] = [row.split(" ")[-1] for row in rows if row.startswith(line)]
    expected = (answer["loaded"]["total_bytes"] - estimated) / estimated
    assert float(value) == pytest.approx(expected, rel=1e-6)
