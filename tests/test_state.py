"""memwarden's history: what the core persists, reading it back, and plugin failures as events."""

from __future__ import annotations

import pytest

from memwarden import hookimpl
from memwarden.core.config import Config, StateConfig
from memwarden.core.errors import StateError
from memwarden.core.governor import Governor
from memwarden.core.serialize import RECORD_TYPES
from memwarden.core.types import Event, UsageRecord
from memwarden.hookspecs import PERSISTED_KINDS
from memwarden.testing import warden_with
from memwarden.testing.fakes import GIB, make_rig


class KindRecorder:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    @hookimpl
    def persist_state(self, kind, record, config):
        self.kinds.append(kind)


def state_config(tmp_path) -> Config:
    return Config(state=StateConfig(path=str(tmp_path / "state.db")))


def test_the_persisted_kinds_are_exactly_those_a_governed_scene_emits(tmp_path):
    rig = make_rig(state_config(tmp_path))
    recorder = KindRecorder()
    rig.warden.plugins.register(recorder)
    rig.provider.add_model("llama", 8 * GIB)
    rig.provider.load("llama", context_tokens=4096)
    rig.warden.generate("llama", "hello there", provider="memory")
    rig.device.set_used_percent(90)
    Governor(rig.warden).step()
    assert set(recorder.kinds) == set(PERSISTED_KINDS)


def test_every_persisted_kind_has_a_record_type():
    assert tuple(RECORD_TYPES) == PERSISTED_KINDS


def test_the_warden_reads_back_the_events_it_emitted(tmp_path):
    rig = make_rig(state_config(tmp_path))
    events = [Event(kind="level-changed", message=f"n{n}", at=100.0 + n) for n in range(4)]
    for event in events:
        rig.warden.emit(event)
    assert rig.warden.read_state("event", since=101.0, limit=2) == events[2:]


def test_usage_through_generate_is_read_back_as_a_usage_record(tmp_path):
    rig = make_rig(state_config(tmp_path))
    rig.provider.add_model("llama", GIB)
    rig.provider.load("llama")
    rig.warden.generate("llama", "one two three", provider="memory")
    [record] = rig.warden.read_state("usage")
    assert isinstance(record, UsageRecord)
    assert (record.model, record.provider, record.success, record.prompt_tokens) == (
        "llama",
        "memory",
        True,
        3,
    )


def test_reading_an_unknown_kind_is_a_state_error_naming_it(tmp_path):
    rig = make_rig(state_config(tmp_path))
    with pytest.raises(StateError, match="no record kind is named 'load'"):
        rig.warden.read_state("load")


def test_reading_before_anything_was_stored_creates_no_file(tmp_path):
    rig = make_rig(state_config(tmp_path))
    assert rig.warden.read_state("event") == []
    assert not (tmp_path / "state.db").exists()


def test_with_state_off_nothing_is_read(tmp_path):
    rig = make_rig(Config(state=StateConfig(enabled=False, path=str(tmp_path / "state.db"))))
    rig.warden.emit(Event(kind="level-changed", message="up"))
    assert rig.warden.read_state("event") == []


class FailsInDetectDevice:
    @hookimpl
    def detect_device(self, config):
        raise RuntimeError("sensor gone")


class Events:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    @hookimpl
    def on_event(self, event, warden):
        self.seen.append(event)


def test_a_plugin_failing_in_a_hook_is_one_plugin_failed_event_however_often_it_fails():
    events = Events()
    warden = warden_with(events, Config(state=StateConfig(enabled=False)))
    warden.plugins.register(FailsInDetectDevice())
    for _ in range(3):
        warden.snapshot()
    assert [(e.kind, dict(e.data)) for e in events.seen] == [
        (
            "plugin-failed",
            {
                "plugin": "FailsInDetectDevice",
                "hook": "detect_device",
                "error": "RuntimeError: sensor gone",
                "distribution": None,
            },
        )
    ]


class FailsInOnEvent:
    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def on_event(self, event, warden):
        self.calls += 1
        raise RuntimeError("notifier down")


def test_a_failing_on_event_plugin_reports_itself_once_and_does_not_loop():
    failing = FailsInOnEvent()
    events = Events()
    warden = warden_with(failing, Config(state=StateConfig(enabled=False)))
    warden.plugins.register(events)
    warden.emit(Event(kind="level-changed", message="up"))
    warden.emit(Event(kind="level-changed", message="down"))
    # pluggy calls the later registration first: the recorder sees each event before the
    # failing plugin raises on it.
    assert [e.kind for e in events.seen] == ["level-changed", "plugin-failed", "level-changed"]
    assert failing.calls == 3
