"""Every hook example in docs/plugins.md is a working plugin."""

from __future__ import annotations

import re
import types
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from memwarden.core.config import parse_config_data
from memwarden.core.governor import Governor
from memwarden.core.picking import PickContext
from memwarden.core.types import (
    AvailableModel,
    ContextWindow,
    Event,
    Message,
    ModelRef,
    ModelRequest,
    PressureLevel,
)
from memwarden.testing import assert_no_plugin_failures, warden_with

DOC = Path(__file__).parent.parent / "docs" / "plugins.md"


def hook_examples() -> dict[str, str]:
    text = DOC.read_text().split("## Every hook", 1)[1].split("## Testing your plugin", 1)[0]
    sections = re.split(r"^### `(\w+)\(", text, flags=re.M)[1:]
    examples = {}
    for hook, body in zip(sections[::2], sections[1::2], strict=True):
        [code] = re.findall(r"```python\n(.*?)```", body, flags=re.S)
        examples[hook] = code
    return examples


EXAMPLES = hook_examples()


def plugin_from(hook: str) -> types.ModuleType:
    module = types.ModuleType(f"docs_example_{hook}")
    exec(compile(EXAMPLES[hook], f"{DOC}:{hook}", "exec"), module.__dict__)
    return module


def test_every_hookspec_has_an_example():
    from memwarden import hookspecs

    specs = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "memwarden_spec")}
    assert specs == set(EXAMPLES)


def test_detect_device_example():
    warden = warden_with(plugin_from("detect_device"))
    assert warden.snapshot().pool("fpga:0").total_bytes == 8 * 2**30
    off = warden_with(
        plugin_from("detect_device"),
        parse_config_data({"plugins": {"fpga": {"enabled": False}}}, None),
    )
    assert off.snapshot().unavailable[0].reason == "disabled in [plugins.fpga]"
    assert_no_plugin_failures(warden)


def test_estimate_model_size_example():
    warden = warden_with(plugin_from("estimate_model_size"))
    estimate = warden.estimate(ModelRef("tinyllama:1.1b"), 2048)
    assert estimate.weights_bytes == 550_000_000
    assert (
        warden.hook.estimate_model_size(
            model=ModelRef("other"), context_tokens=1, options={}, config=warden.config
        )
        is None
    )


def test_on_pressure_and_register_providers_examples():
    warden = warden_with(plugin_from("register_providers"))
    warden.plugins.register(plugin_from("on_pressure"))
    warden.providers()["static"].load("tiny", context_tokens=512)
    governor = Governor(warden)
    reading = governor.sample()
    critical = attrs.evolve(reading, level=PressureLevel.CRITICAL)
    [[action]] = warden.hook.on_pressure(reading=critical, context=governor.context(critical))
    assert (action.kind, action.model, action.expected_freed_bytes) == ("unload", "tiny", 2**20)
    assert action.strategy == "largest-first"
    assert governor.check(action, governor.context(critical)) is None
    assert warden.hook.on_pressure(reading=reading, context=governor.context(reading)) == []
    assert_no_plugin_failures(warden)


def test_on_pressure_example_proposes_nothing_for_a_critical_model():
    config = parse_config_data({"models": {"tiny": {"critical": True}}}, None)
    warden = warden_with(plugin_from("register_providers"), config)
    warden.plugins.register(plugin_from("on_pressure"))
    warden.providers()["static"].load("tiny", context_tokens=512)
    governor = Governor(warden)
    critical = attrs.evolve(governor.sample(), level=PressureLevel.CRITICAL)
    assert warden.hook.on_pressure(reading=critical, context=governor.context(critical)) == [[]]


def test_compress_context_example():
    warden = warden_with(plugin_from("compress_context"))
    window = ContextWindow(
        messages=(
            Message("system", "be terse", tokens=10, pinned=True),
            Message("user", "old", tokens=100),
            Message("assistant", "new", tokens=50),
        )
    )
    result = warden.hook.compress_context(window=window, budget_tokens=80)
    assert [m.content for m in result.messages] == ["be terse", "new"]


def test_persist_state_example(tmp_path):
    config = parse_config_data({"plugins": {"jsonl": {"folder": str(tmp_path)}}}, None)
    warden = warden_with(plugin_from("persist_state"), config)
    warden.emit(Event(kind="level-changed", message="up"))
    assert '"message": "up"' in (tmp_path / "event.jsonl").read_text()


def test_read_state_example_reads_back_what_the_persist_state_example_wrote(tmp_path):
    config = parse_config_data({"plugins": {"jsonl": {"folder": str(tmp_path)}}}, None)
    warden = warden_with(plugin_from("persist_state"), config)
    warden.plugins.register(plugin_from("read_state"))
    events = [Event(kind="level-changed", message=str(n), at=1000.0 + n) for n in range(3)]
    for event in events:
        warden.emit(event)
    assert warden.read_state("event", since=1001.0, limit=1) == [events[2]]
    assert warden.read_state("event", since=1001.0, limit=5) == events[1:]
    assert_no_plugin_failures(warden)


def test_pick_model_example():
    warden = warden_with(plugin_from("pick_model"))
    small = AvailableModel("small", "p", size_bytes=1, max_context_tokens=2048)
    big = AvailableModel("big", "p", size_bytes=9, max_context_tokens=131072)
    context = PickContext(loaded=(), stats={}, config=warden.config)
    choice = warden.hook.pick_model(
        request=ModelRequest(min_context_tokens=8192), candidates=[small, big], context=context
    )
    assert choice.model == big


def test_register_commands_example():
    import click

    group = click.Group()
    warden = warden_with(plugin_from("register_commands"))
    warden.hook.register_commands(cli=group)
    assert CliRunner().invoke(group, ["hello", "--json"]).output.strip() == '{"hello": "world"}'


def test_on_event_example():
    plugin = plugin_from("on_event")
    warden = warden_with(plugin)
    warden.emit(Event(kind="level-changed", message="critical now", level=PressureLevel.CRITICAL))
    warden.emit(Event(kind="level-changed", message="fine", level=PressureLevel.NORMAL))
    assert plugin.SEEN == ["critical now"]


@pytest.mark.parametrize("hook", sorted(EXAMPLES))
def test_example_registers_cleanly(hook):
    warden = warden_with(plugin_from(hook))
    assert hook in warden.plugins.plugin_list()[0].hooks


def test_the_testing_example_runs_as_written_with_plain_pytest(pytester):
    testing = DOC.read_text().split("## Testing your plugin", 1)[1]
    [example] = re.findall(r"```python\n(.*?)```", testing, flags=re.S)
    pytester.makepyfile(memwarden_fpga=EXAMPLES["detect_device"], test_fpga=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


CONFIG_DOCS = [
    "README.md",
    "docs/configuration.md",
    "docs/governor.md",
    "docs/devices.md",
    "docs/estimation.md",
    "docs/history.md",
    "docs/serve.md",
]


def config_examples():
    root = DOC.parent.parent
    for name in CONFIG_DOCS:
        for index, block in enumerate(
            re.findall(r"```toml\n(.*?)```", (root / name).read_text(), flags=re.S)
        ):
            yield pytest.param(block, id=f"{name}#{index}")


@pytest.mark.parametrize("text", list(config_examples()))
def test_config_examples_in_the_docs_are_valid(text):
    import tomllib

    parse_config_data(tomllib.loads(text), None)


GOVERNOR_DOC = DOC.parent / "governor.md"


def program_examples():
    blocks = re.findall(r"```python\n(.*?)```", GOVERNOR_DOC.read_text(), flags=re.S)
    return [pytest.param(block, id=f"governor.md#{i}") for i, block in enumerate(blocks)]


def test_governor_doc_has_program_examples():
    assert len(program_examples()) == 2


@pytest.mark.parametrize("code", program_examples())
def test_governor_program_examples_run_as_written(code):
    # Each block is a whole program: its own imports, its own asserts.
    exec(compile(code, str(GOVERNOR_DOC), "exec"), {"__name__": "docs_example"})
