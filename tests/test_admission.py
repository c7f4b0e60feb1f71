"""Admission's three steps (need, choice, refusal text) and the largest-context search."""

from __future__ import annotations

from memwarden.core import admission
from memwarden.core.admission import (
    MANAGED_CAP,
    MAX_LOADED,
    MIN_CONTEXT_TOKENS,
    Eviction,
    admit,
    choose,
    configured_priority,
    max_context,
    need,
)
from memwarden.core.config import (
    BudgetConfig,
    ByteSize,
    Config,
    GovernorConfig,
    ModelPolicy,
    PressureConfig,
)
from memwarden.core.types import (
    Confidence,
    DeviceSnapshot,
    LoadedModel,
    MemoryEstimate,
    MemoryPool,
    ModelRef,
    PoolKind,
    PoolShare,
)

GiB = 1 << 30


def pool(pool_id="system", kind=PoolKind.SYSTEM, total=16 * GiB, available=8 * GiB):
    return MemoryPool(
        id=pool_id,
        kind=kind,
        name=pool_id,
        total_bytes=total,
        available_bytes=available,
        used_bytes=total - available,
        source="test",
    )


def estimate(weights=2 * GiB, kv=1 * GiB, context=4096, per_pool=(), trained=None, name="m"):
    return MemoryEstimate(
        model=ModelRef(name=name),
        context_tokens=context,
        weights_bytes=weights,
        kv_cache_bytes=kv,
        compute_bytes=0,
        overhead_bytes=0,
        confidence=Confidence.HIGH,
        estimator="test",
        per_pool=per_pool,
        trained_context_tokens=trained,
    )


def loaded(name, size, gpu=0, in_flight=0):
    return LoadedModel(
        name=name,
        provider="p",
        total_bytes=size,
        gpu_bytes=gpu,
        instance_id=name,
        requests_in_flight=in_flight,
    )


def config(margin=10.0, cap=None, slots=None, models=None):
    return Config(
        budget=BudgetConfig(safety_margin_percent=margin),
        pressure=PressureConfig(max_managed_memory=ByteSize(cap) if cap else None),
        governor=GovernorConfig(max_loaded_models=slots),
        models=models or {},
    )


def snapshot(*pools):
    return DeviceSnapshot(pools=pools or (pool(),))


# -- need: placement, margin, cap, slots ---------------------------------------------------


def test_headroom_is_available_minus_margin_minus_model():
    [fit] = need([estimate()], snapshot(), config=config()).placement
    assert fit.safety_margin_bytes == int(16 * GiB * 0.10)
    assert fit.headroom_bytes == 8 * GiB - int(1.6 * GiB) - 3 * GiB


def test_a_model_that_fits_leaves_nothing_short():
    assert need([estimate()], snapshot(), config=config()).short == {}


def test_a_model_that_eats_into_the_margin_is_short_by_the_difference():
    result = need([estimate()], snapshot(pool(available=4 * GiB)), config=config())
    assert result.short == {"system": 3 * GiB - (4 * GiB - int(1.6 * GiB))}


def test_the_margin_percent_comes_from_the_budget_config():
    result = need([estimate()], snapshot(), config=config(margin=50.0))
    assert result.short == {"system": 3 * GiB}


def test_weights_and_runtime_are_reported_apart():
    [fit] = need([estimate()], snapshot(), config=config()).placement
    assert (fit.weights_bytes, fit.runtime_bytes) == (2 * GiB, 1 * GiB)


def test_a_gpu_with_room_is_preferred_to_system_ram():
    snap = snapshot(pool(), pool("cuda:0", PoolKind.GPU, total=8 * GiB, available=7 * GiB))
    assert [p.pool_id for p in need([estimate()], snap, config=config()).placement] == ["cuda:0"]


def test_the_issue_example_places_the_model_on_the_gpu():
    # 24 GiB GPU plus 16 GiB RAM with 8 GiB free, and a 12.5 GiB model: it goes to the GPU,
    # where it fits; system RAM is not asked for 12.5 GiB it does not have.
    snap = snapshot(pool(), pool("cuda:0", PoolKind.GPU, total=24 * GiB, available=22 * GiB))
    result = need([estimate(weights=12 * GiB, kv=GiB // 2)], snap, config=config())
    assert [(p.pool_id, p.headroom_bytes) for p in result.placement] == [
        ("cuda:0", 22 * GiB - int(2.4 * GiB) - int(12.5 * GiB))
    ]
    assert result.short == {}


def test_the_accelerator_with_the_most_room_is_chosen():
    snap = snapshot(
        pool(),
        pool("cuda:0", PoolKind.GPU, total=8 * GiB, available=5 * GiB),
        pool("cuda:1", PoolKind.GPU, total=8 * GiB, available=7 * GiB),
    )
    assert [p.pool_id for p in need([estimate()], snap, config=config()).placement] == ["cuda:1"]


def test_unified_memory_counts_as_an_accelerator():
    snap = snapshot(pool("unified", PoolKind.UNIFIED, total=32 * GiB, available=20 * GiB))
    assert [p.pool_id for p in need([estimate()], snap, config=config()).placement] == ["unified"]


def test_a_gpu_too_small_leaves_the_model_in_system_ram():
    snap = snapshot(pool(), pool("cuda:0", PoolKind.GPU, total=4 * GiB, available=3 * GiB))
    assert [p.pool_id for p in need([estimate()], snap, config=config()).placement] == ["system"]


def test_two_models_do_not_count_the_same_room_twice():
    # The GPU has room for one 3 GiB model above its margin (7 - 0.8 = 6.2 GiB, 3 + 3 = 6 fits;
    # a third does not): the third goes to system RAM.
    snap = snapshot(pool(), pool("cuda:0", PoolKind.GPU, total=8 * GiB, available=7 * GiB))
    result = need([estimate(), estimate(), estimate()], snap, config=config())
    assert [(p.pool_id, p.needed_bytes) for p in result.placement] == [
        ("system", 3 * GiB),
        ("cuda:0", 6 * GiB),
    ]


def test_a_named_pool_is_used_even_when_another_has_more_room():
    snap = snapshot(pool(), pool("cuda:0", PoolKind.GPU, total=8 * GiB, available=7 * GiB))
    result = need([estimate()], snap, config=config(), pool_id="system")
    assert [p.pool_id for p in result.placement] == ["system"]


def test_an_unknown_pool_gives_a_reason_and_no_placement():
    result = need([estimate()], snapshot(), config=config(), pool_id="cuda:9")
    assert (result.placement, result.reason) == ((), "no memory pool 'cuda:9' (pools: system)")


def test_a_split_estimate_must_fit_every_pool_it_uses():
    shares = (PoolShare("cuda:0", 2 * GiB), PoolShare("system", 1 * GiB))
    snap = snapshot(pool(), pool("cuda:0", PoolKind.GPU, total=4 * GiB, available=1 * GiB))
    result = need([estimate(per_pool=shares)], snap, config=config())
    assert [(p.pool_id, p.fits) for p in result.placement] == [("system", True), ("cuda:0", False)]
    assert result.short == {"cuda:0": 2 * GiB - (1 * GiB - int(0.4 * GiB))}


def test_the_managed_cap_counts_loaded_models_and_the_new_one():
    result = need(
        [estimate()], snapshot(), config=config(cap=4 * GiB), loaded=[loaded("a", 2 * GiB)]
    )
    assert result.short == {MANAGED_CAP: 1 * GiB}


def test_model_slots_count_loaded_models_and_the_new_one():
    result = need(
        [estimate()], snapshot(), config=config(slots=1), loaded=[loaded("a", 1), loaded("b", 1)]
    )
    assert result.short == {MAX_LOADED: 2}


# -- choice --------------------------------------------------------------------------------


def candidate(name, size, cost):
    return Eviction(loaded(name, size), cost, {"system": size})


def test_choice_takes_the_cheapest_first_and_stops_when_covered():
    chosen, remaining = choose(
        {"system": 4 * GiB},
        [candidate("a", 5 * GiB, 10), candidate("b", 5 * GiB, 11)],
    )
    assert ([e.model.name for e in chosen], remaining) == (["a"], {"system": -GiB})


def test_choice_drops_an_eviction_a_later_one_makes_unnecessary():
    # Greedy takes the cheap small model first (not enough), then the big one, which alone
    # covers the need: the small one is dropped again.
    chosen, remaining = choose(
        {"system": 15 * GiB},
        [candidate("small", 5 * GiB, 10), candidate("big", 50 * GiB, 20)],
    )
    assert ([e.model.name for e in chosen], remaining) == (["big"], {"system": -35 * GiB})


def test_choice_keeps_evictions_that_cover_different_needs():
    slot_only = Eviction(loaded("tiny", 0), 10, {MAX_LOADED: 1})
    chosen, _ = choose(
        {"system": 4 * GiB, MAX_LOADED: 1},
        [slot_only, candidate("big", 5 * GiB, 20)],
    )
    assert [e.model.name for e in chosen] == ["tiny", "big"]


def test_choice_drops_a_slot_eviction_once_a_bigger_eviction_frees_a_slot_too():
    slot_only = Eviction(loaded("tiny", 0), 10, {MAX_LOADED: 1})
    big = Eviction(loaded("big", 5 * GiB), 20, {"system": 5 * GiB, MAX_LOADED: 1})
    chosen, remaining = choose({"system": 4 * GiB, MAX_LOADED: 1}, [slot_only, big])
    assert ([e.model.name for e in chosen], remaining) == (["big"], {"system": -GiB, MAX_LOADED: 0})


def test_choice_reports_what_is_still_short_when_evicting_everything_is_not_enough():
    chosen, remaining = choose({"system": 10 * GiB}, [candidate("a", 4 * GiB, 10)])
    assert ([e.model.name for e in chosen], remaining) == (["a"], {"system": 6 * GiB})


# -- admit: the three steps together -------------------------------------------------------


def run_admit(models, *, cfg=None, snap=None, priority=0, refusing=None, est=None):
    cfg = cfg or config()
    return admit(
        [est or estimate(weights=6 * GiB, kv=0)],
        snap or snapshot(),
        models,
        policy_of=lambda m: cfg.model_policy(m.name),
        costs=lambda ms: [10.0 + i for i, _ in enumerate(ms)],
        config=cfg,
        priority=priority,
        refusing=refusing,
    )


def test_admit_evicts_the_cheapest_evictable_model_that_makes_room():
    # 8 GiB available, 1.6 kept free: 6.4 GiB of room for 6 GiB... with 2 GiB more loaded
    # under a 6 GiB cap, one 2 GiB model must go.
    answer = run_admit([loaded("a", 2 * GiB), loaded("b", 2 * GiB)], cfg=config(cap=8 * GiB))
    assert (answer.fits, [e.model.name for e in answer.evictions]) == (True, ["a"])


def test_admit_never_evicts_pinned_critical_busy_or_higher_priority_models():
    cfg = config(
        cap=6 * GiB,
        models={
            "pinned": ModelPolicy(pinned=True),
            "critical": ModelPolicy(critical=True),
            "high": ModelPolicy(priority=5),
        },
    )
    models = [
        loaded("pinned", GiB),
        loaded("critical", GiB),
        loaded("busy", GiB, in_flight=2),
        loaded("high", GiB),
    ]
    answer = run_admit(models, cfg=cfg)
    assert (answer.fits, answer.evictions) == (False, ())
    assert answer.not_evictable == (
        "pinned is pinned",
        "critical is critical",
        "busy has 2 request(s) in flight",
        "high has priority 5 > 0",
    )


def test_admit_counts_gpu_bytes_towards_the_single_gpu():
    snap = snapshot(
        pool(available=16 * GiB), pool("cuda:0", PoolKind.GPU, total=8 * GiB, available=GiB)
    )
    on_gpu = loaded("a", 7 * GiB, gpu=7 * GiB)
    shares = (PoolShare("cuda:0", 6 * GiB),)
    answer = run_admit([on_gpu], snap=snap, est=estimate(weights=6 * GiB, kv=0, per_pool=shares))
    assert (answer.fits, [e.model.name for e in answer.evictions]) == (True, ["a"])


def test_while_loads_are_refused_an_equal_priority_load_is_refused():
    answer = run_admit([loaded("a", 2 * GiB)], refusing="memory pressure is CRITICAL: refusing")
    assert answer.fits is False
    assert answer.not_evictable == ("a has priority 0, not below 0",)


def test_while_loads_are_refused_a_higher_priority_load_evicts_what_it_takes():
    answer = run_admit(
        [loaded("a", 4 * GiB), loaded("b", 4 * GiB)],
        priority=1,
        refusing="memory pressure is CRITICAL: refusing",
    )
    # The load takes 6 GiB: both lower-priority models go, though memory alone had room.
    assert (answer.fits, [e.model.name for e in answer.evictions]) == (True, ["a", "b"])


def test_the_refusal_names_the_model_the_need_what_there_is_and_what_is_kept():
    cfg = config(cap=8 * GiB, slots=2, models={"p": ModelPolicy(pinned=True)})
    answer = run_admit([loaded("p", 3 * GiB), loaded("q", GiB)], cfg=cfg)
    assert answer.reason == (
        "'m' need(s) 6.0 GiB at 4,096 tokens of context (6.0 GiB in pool system); there is "
        "max_managed_memory 8.0 GiB with 4.0 GiB in use by loaded models; max_loaded_models 2 "
        "with 2 loaded; short by max_managed_memory 2.0 GiB, max_loaded_models 1 model slot. "
        "Evicting every model that may be evicted (1 model, 1.0 GiB) still leaves "
        "max_managed_memory 1.0 GiB missing; not evictable: p is pinned"
    )


def test_sizes_below_a_gib_are_given_in_mib():
    answer = run_admit([], cfg=config(cap=100 * 2**20), est=estimate(weights=858 * 2**20, kv=0))
    assert "short by max_managed_memory 758.0 MiB" in answer.reason


# -- the priority a load takes -------------------------------------------------------------


def test_a_load_without_a_priority_takes_the_configured_one():
    cfg = config(models={"llama3.2:latest": ModelPolicy(priority=4)})
    assert configured_priority(cfg, ["llama3.2"]) == 4


def test_a_load_of_an_unconfigured_model_takes_the_default_priority():
    assert configured_priority(config(), ["other"]) == 0


# -- the largest context -------------------------------------------------------------------


def _fit_below(limit_tokens, trained=None):
    """Admission at a context, for a model that fits exactly up to ``limit_tokens`` tokens."""
    snap = snapshot(pool(total=100 * GiB, available=100 * GiB))
    usable = 90 * GiB  # available minus the 10% margin

    def fit_at(tokens):
        kv = usable if tokens <= limit_tokens else usable + 1
        model = estimate(weights=0, kv=kv, context=tokens, trained=trained)
        return admission.admit(
            [model],
            snap,
            [],
            policy_of=lambda m: ModelPolicy(),
            costs=lambda ms: [],
            config=config(),
            priority=0,
        )

    return fit_at


def test_max_context_finds_the_largest_context_that_fits():
    assert max_context(_fit_below(50_000)).context_tokens == 50_000


def test_max_context_is_capped_at_the_trained_context_with_a_note():
    found = max_context(_fit_below(50_000, trained=32_768))
    assert (found.context_tokens, found.memory_limit_tokens) == (32_768, 50_000)
    assert found.notes[0] == (
        "memory allows 50,000 tokens, but the model was trained for 32,768; answering 32,768"
    )


def test_max_context_is_none_when_not_even_the_minimum_fits():
    found = max_context(_fit_below(MIN_CONTEXT_TOKENS - 1))
    assert found.context_tokens is None
