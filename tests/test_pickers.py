"""The built-in pick_model plugins, alone and in their order, and `memwarden.core.picking.pick`."""

from __future__ import annotations

import pytest

from memwarden.core.config import Config, StateConfig, parse_config_data
from memwarden.core.errors import ModelNotFound
from memwarden.core.picking import PickContext, model_stats, pick
from memwarden.core.plugins import Plugins
from memwarden.core.types import AvailableModel, LoadedModel, ModelRequest, UsageRecord
from memwarden.core.warden import Warden
from memwarden.plugins.pickers import learned, loaded, preference, smallest
from memwarden.testing.fakes import GIB, make_rig

PICKERS = "pick-preference,pick-loaded,pick-learned,pick-smallest"

TINY = AvailableModel("tiny", "ollama", size_bytes=1 * GIB, max_context_tokens=8192)
SMALL = AvailableModel("small", "ollama", size_bytes=2 * GIB, max_context_tokens=32768)
BIG = AvailableModel("big", "ollama", size_bytes=8 * GIB, max_context_tokens=131072)
EMBED = AvailableModel(
    "nomic-embed-text", "ollama", size_bytes=GIB // 4, family="nomic-bert", max_context_tokens=8192
)
ALL = (TINY, SMALL, BIG, EMBED)


def context(config: Config | None = None, *, loaded_names=(), calls=()) -> PickContext:
    return PickContext(
        loaded=tuple(LoadedModel(name, "ollama", GIB) for name in loaded_names),
        stats=model_stats(calls),
        config=config or Config(),
    )


def calls(model: str, n: int, *, failures: int = 0, latency_s: float = 1.0) -> list[UsageRecord]:
    return [
        UsageRecord(model, "ollama", float(i), latency_s, success=i >= failures) for i in range(n)
    ]


def chain(config: Config | None = None) -> Warden:
    config = config or Config()
    plugins = Plugins(config, load_entry_points=False, env={"MEMWARDEN_PLUGINS": PICKERS})
    return Warden(config, plugins)


def picked(warden: Warden, request: ModelRequest, ctx: PickContext) -> tuple[str, str]:
    choice = warden.hook.pick_model(request=request, candidates=list(ALL), context=ctx)
    return choice.model.name, choice.chooser


def test_smallest_picks_the_smallest_capable_model():
    choice = smallest.pick_model(ModelRequest(min_context_tokens=16384), ALL, context())
    assert (choice.model, choice.reasons) == (
        SMALL,
        ("small: the smallest of 2 capable models that fit now (2.0 GiB)",),
    )


def test_an_embedding_request_gets_an_embedding_model():
    choice = smallest.pick_model(ModelRequest(task="embed"), ALL, context())
    assert choice.model == EMBED


def test_a_chat_request_never_gets_an_embedding_model():
    choice = smallest.pick_model(ModelRequest(task="chat"), ALL, context())
    assert choice.model == TINY


def test_loaded_picks_a_capable_loaded_model_over_a_smaller_one():
    choice = loaded.pick_model(ModelRequest(), ALL, context(loaded_names=("big",)))
    assert (choice.model, choice.reasons) == (
        BIG,
        ("big: already loaded in ollama, no load needed",),
    )


def test_loaded_says_nothing_when_no_capable_model_is_loaded():
    assert (
        loaded.pick_model(ModelRequest(task="embed"), ALL, context(loaded_names=("big",))) is None
    )


def test_learned_picks_the_best_success_rate_then_the_lowest_latency():
    history = calls("tiny", 30, failures=10) + calls("small", 30, latency_s=2.0)
    history += calls("big", 30, latency_s=1.0)
    choice = learned.pick_model(ModelRequest(), ALL, context(calls=history))
    assert (choice.model, choice.reasons[0]) == (
        BIG,
        "big: 100% of 30 recorded calls succeeded, median latency 1.00 s",
    )


def test_learned_ignores_models_with_too_few_calls():
    assert learned.pick_model(ModelRequest(), ALL, context(calls=calls("big", 19))) is None


def test_preference_picks_the_first_capable_model_of_the_list():
    config = parse_config_data({"pick": {"prefer": ["nomic-embed-text", "big", "small"]}}, None)
    choice = preference.pick_model(ModelRequest(), ALL, context(config))
    assert (choice.model, choice.reasons) == (
        BIG,
        ("big: first in [pick] prefer (#2), capable and fits now",),
    )


def test_a_name_the_caller_asks_for_comes_before_the_configured_list():
    config = parse_config_data({"pick": {"prefer": ["big"]}}, None)
    choice = preference.pick_model(ModelRequest(preferred=("small",)), ALL, context(config))
    assert choice.reasons == ("small: asked for, capable and fits now",)


def test_the_chain_asks_preference_first():
    config = parse_config_data({"pick": {"prefer": ["small"]}}, None)
    ctx = context(config, loaded_names=("big",), calls=calls("tiny", 30))
    assert picked(chain(config), ModelRequest(), ctx) == ("small", "pick-preference")


def test_the_chain_prefers_a_loaded_model_to_a_learned_one():
    ctx = context(loaded_names=("big",), calls=calls("tiny", 30))
    assert picked(chain(), ModelRequest(), ctx) == ("big", "pick-loaded")


def test_the_chain_prefers_a_learned_model_to_the_smallest():
    ctx = context(calls=calls("small", 30))
    assert picked(chain(), ModelRequest(), ctx) == ("small", "pick-learned")


def test_the_chain_falls_back_to_the_smallest():
    assert picked(chain(), ModelRequest(), context()) == ("tiny", "pick-smallest")


def rig_config(tmp_path, **pick) -> Config:
    return parse_config_data({"state": {"path": str(tmp_path / "state.db")}, "pick": pick}, None)


def test_pick_offers_loaded_models_and_those_that_fit_without_evicting(tmp_path):
    rig = make_rig(rig_config(tmp_path), total_bytes=16 * GIB)
    rig.warden.plugins.register(smallest)
    rig.provider.add_model("huge", 40 * GIB)
    rig.provider.add_model("small", 2 * GIB)
    choice, _ = pick(rig.warden, ModelRequest())
    assert (choice.model.name, choice.chooser) == ("small", "pick-smallest")


def test_pick_resolves_an_alias_from_the_config(tmp_path):
    rig = make_rig(rig_config(tmp_path, aliases={"fast": "small"}), total_bytes=64 * GIB)
    rig.warden.plugins.register(preference)
    rig.warden.plugins.register(smallest)
    rig.provider.add_model("small", 2 * GIB)
    rig.provider.add_model("tiny", GIB)
    choice, _ = pick(rig.warden, ModelRequest(preferred=("fast",)))
    assert choice.reasons == ("small: asked for, capable and fits now",)


def test_pick_with_no_capable_model_names_each_candidate_and_why(tmp_path):
    rig = make_rig(Config(state=StateConfig(path=str(tmp_path / "state.db"))), total_bytes=64 * GIB)
    rig.warden.plugins.register(smallest)
    rig.provider.add_model("small", 2 * GIB)
    with pytest.raises(
        ModelNotFound, match="no model can serve this embed request: memory/small: "
    ):
        pick(rig.warden, ModelRequest(task="embed"))
