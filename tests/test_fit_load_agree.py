"""`memwarden fit` and a load (`plan_load`, `ensure()`, `Governor.load`) give the same verdict,
the same pool and the same evictions on every snapshot: they are one admission function."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from memwarden.cli import AppContext, cli
from memwarden.core.config import ByteSize, Config, GovernorConfig, ModelPolicy, PressureConfig
from memwarden.core.errors import InsufficientMemory
from memwarden.core.types import MemoryPool, PoolKind
from memwarden.hookspecs import hookimpl
from memwarden.testing.fakes import GIB, make_rig


class ExtraPool:
    """A device plugin reporting one more pool (a GPU, or unified memory) beside the rig's."""

    def __init__(self, pool_id: str, kind: PoolKind, total: int, available: int) -> None:
        self.pool = MemoryPool(
            id=pool_id,
            kind=kind,
            name=pool_id,
            total_bytes=total,
            available_bytes=available,
            used_bytes=total - available,
            source="test",
        )

    @hookimpl
    def detect_device(self, config: Config) -> list[MemoryPool]:
        return [self.pool]


# name: (config, system RAM total/used, extra pool, loaded models as (name, GiB, priority),
#        expected (fits, pools, evicted instances))
SCENES = {
    "ram only": (Config(), (100, 10), None, [], (True, ["system"], [])),
    "ram only, too small": (Config(), (16, 8), None, [], (False, ["system"], [])),
    "gpu plus ram": (
        Config(),
        (16, 8),
        ExtraPool("cuda:0", PoolKind.GPU, 24 * GIB, 22 * GIB),
        [],
        (True, ["cuda:0"], []),
    ),
    "unified memory": (
        Config(),
        (16, 8),
        ExtraPool("unified", PoolKind.UNIFIED, 64 * GIB, 40 * GIB),
        [],
        (True, ["unified"], []),
    ),
    "capped": (
        Config(pressure=PressureConfig(max_managed_memory=ByteSize(10 * GIB))),
        (100, 10),
        None,
        [],
        (False, ["system"], []),
    ),
    "capped, a lower priority model evicted": (
        Config(pressure=PressureConfig(max_managed_memory=ByteSize(20 * GIB))),
        (100, 10),
        None,
        [("old", 10, 0)],
        (True, ["system"], ["old#1"]),
    ),
    "slot-limited, the loaded model kept": (
        Config(
            governor=GovernorConfig(max_loaded_models=1),
            models={"old": ModelPolicy(priority=5)},
        ),
        (100, 10),
        None,
        [("old", 1, 5)],
        (False, ["system"], []),
    ),
    "slot-limited, the loaded model evicted": (
        Config(governor=GovernorConfig(max_loaded_models=1)),
        (100, 10),
        None,
        [("old", 1, 0)],
        (True, ["system"], ["old#1"]),
    ),
}


def scene(name: str):
    config, (total, used), extra, models, expected = SCENES[name]
    rig = make_rig(config, total_bytes=total * GIB, baseline_bytes=used * GIB)
    if extra is not None:
        rig.warden.plugins.register(extra)
    rig.provider.add_model("new", int(12.5 * GIB))
    for model, size, _ in models:
        rig.provider.add_model(model, size * GIB)
        rig.provider.load(model)
    return rig, expected


def fit_answer(rig) -> tuple[bool, list[str], list[str]]:
    app = AppContext(None)
    app._warden = rig.warden
    result = CliRunner().invoke(
        cli, ["fit", "new", "--ctx", "1", "--json"], obj=app, catch_exceptions=False
    )
    data = json.loads(result.stdout)
    assert result.exit_code == (0 if data["fits"] else 3)
    return (
        data["fits"],
        [p["pool_id"] for p in data["pools"]],
        [e["instance"] for e in data["evictions"]],
    )


@pytest.mark.parametrize("name", sorted(SCENES))
def test_fit_gives_the_expected_answer(name):
    rig, expected = scene(name)
    assert fit_answer(rig) == expected


@pytest.mark.parametrize("name", sorted(SCENES))
def test_plan_load_agrees_with_fit(name):
    rig, expected = scene(name)
    plan = rig.warden.governor.plan_load(["new"], context_tokens=1)
    answer = (plan.fits, [p.pool_id for p in plan.placement], [m.instance_id for m in plan.evicted])
    assert answer == expected == fit_answer(rig)


@pytest.mark.parametrize("name", sorted(SCENES))
def test_load_agrees_with_fit(name):
    rig, (fits, _, evicted) = scene(name)
    governor = rig.warden.governor
    if fits:
        loaded = governor.load("new", context_tokens=1)
        assert (loaded.name, rig.provider.unloaded) == ("new", evicted)
    else:
        with pytest.raises(InsufficientMemory):
            governor.load("new", context_tokens=1)
        assert ("new", 1) not in rig.provider.loads
