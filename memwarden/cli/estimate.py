"""`memwarden estimate` and `memwarden fit`: what a model costs, and whether it fits.

``fit`` asks the same admission ``memwarden load`` goes through (``Governor.plan_load``), so the
two cannot disagree: it exits 0 when a load would be admitted (showing what it would evict first)
and 3 when it would be refused (the code of InsufficientMemory, so a script can tell "does not fit"
from a failure, 1, or bad usage, 2); with ``--json`` the answer is printed either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes
from memwarden.core.admission import MaxContext, PoolFit, max_context
from memwarden.core.errors import ConfigError, InsufficientMemory
from memwarden.core.governor import LoadPlan
from memwarden.core.providers import LOAD_OPTION_KEYS
from memwarden.core.serialize import to_data
from memwarden.core.types import DeviceSnapshot, MemoryEstimate, ModelRef, PoolKind
from memwarden.core.warden import Warden
from memwarden.estimation.model_files import read_metadata_file
from memwarden.estimation.profiles import PROFILES
from memwarden.estimation.sizing import KV_CACHE_TYPES

DEFAULT_CONTEXT_TOKENS = 4096


def runtime_flags(command: Any) -> Any:
    """The flags of every runtime option that changes memory (--runtime, --batch, --kv-type...,
    collected by :func:`runtime_options`): on estimate and fit, and on load and generate, whose
    admission sizes with them and whose provider loads with them."""
    options = [
        click.option(
            "--runtime",
            type=click.Choice(sorted(PROFILES)),
            default=None,
            help="Size for this runtime's defaults (docs/estimation.md, runtime profiles); "
            "default: the provider's runtime for a provider's model, else llama-server's.",
        ),
        click.option(
            "--kv-type",
            type=click.Choice(KV_CACHE_TYPES, case_sensitive=False),
            default=None,
            help="KV cache type of K and V (llama.cpp --cache-type-k/-v) [default: f16].",
        ),
        click.option(
            "--kv-type-k",
            type=click.Choice(KV_CACHE_TYPES, case_sensitive=False),
            default=None,
            help="K cache type alone (llama.cpp --cache-type-k).",
        ),
        click.option(
            "--kv-type-v",
            type=click.Choice(KV_CACHE_TYPES, case_sensitive=False),
            default=None,
            help="V cache type alone (llama.cpp --cache-type-v); a quantised one needs flash "
            "attention.",
        ),
        click.option(
            "--parallel",
            type=click.IntRange(min=1),
            default=None,
            help="Sequences served at once; each gets --ctx tokens [default: 1].",
        ),
        click.option(
            "--batch",
            "batch_tokens",
            type=click.IntRange(min=1),
            default=None,
            help="Logical batch, llama.cpp -b [default: the runtime's].",
        ),
        click.option(
            "--ubatch",
            "ubatch_tokens",
            type=click.IntRange(min=1),
            default=None,
            help="Micro-batch, llama.cpp -ub [default: the runtime's]; sizes the compute buffer.",
        ),
        click.option(
            "--flash-attn/--no-flash-attn",
            "flash_attention",
            default=None,
            help="Flash attention on or off [default: the runtime's].",
        ),
        click.option(
            "--swa-full/--no-swa-full",
            "swa_full",
            default=None,
            help="Full-size sliding-window caches [default: the runtime's].",
        ),
        click.option(
            "--mmap/--no-mmap",
            "mmap",
            default=None,
            help="Weights mapped from the file (page cache, shared and reclaimable) or read into "
            "the process [default: the runtime's].",
        ),
        click.option(
            "--gpu-layers",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Layers offloaded to a GPU (llama.cpp -ngl); the rest stay in system RAM.",
        ),
        click.option(
            "--no-kv-offload",
            is_flag=True,
            help="Keep the KV cache of offloaded layers in system RAM (llama.cpp -nkvo).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _model_options(command: Any) -> Any:
    options = [
        click.argument("model"),
        click.option(
            "--ctx",
            "context_tokens",
            type=click.IntRange(min=1),
            default=DEFAULT_CONTEXT_TOKENS,
            show_default=True,
            help="Context length per sequence, in tokens.",
        ),
        runtime_flags,
        click.option(
            "--provider",
            default=None,
            help="Where the name comes from: ollama, lmstudio or llamacpp (default: the first "
            "reachable provider that offers it, as `load` finds it).",
        ),
        click.option(
            "--metadata",
            "metadata_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="A provider's model info as JSON (Ollama's /api/show response), for when the "
            "model file is out of reach.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# The runtime flags that map one to one onto load options; --gpu-layers and --no-kv-offload have
# their own handling in runtime_options.
RUNTIME_OPTION_KEYS = tuple(
    key for key in LOAD_OPTION_KEYS if key not in ("gpu_layers", "kv_offload")
)


def runtime_options(
    values: dict[str, Any], gpu_layers: int, no_kv_offload: bool, pool_id: str | None = None
) -> dict[str, Any]:
    """The estimate options of the runtime flags given; a flag left out takes the runtime
    profile's value (or the provider's runtime's) when sizing."""
    options: dict[str, Any] = {}
    for key in RUNTIME_OPTION_KEYS:
        value = values.get(key)
        if value is not None:
            options[key] = value.lower() if key.startswith("kv_type") else value
    if gpu_layers:
        options["gpu_layers"] = gpu_layers
        options["pool_id"] = pool_id
    if no_kv_offload:
        options["kv_offload"] = False
    return options


def gpu_pool(snapshot: DeviceSnapshot) -> str:
    """The GPU pool ``--gpu-layers`` offloads to: the first one reported, or a usage error."""
    gpus = [pool.id for pool in snapshot.pools if pool.kind is PoolKind.GPU]
    if not gpus:
        raise click.UsageError("--gpu-layers needs a GPU pool, and none is reported")
    return gpus[0]


def load_runtime_options(
    warden: Warden, flags: dict[str, Any], gpu_layers: int, no_kv_offload: bool
) -> dict[str, Any]:
    """The runtime options of ``load`` and ``generate``: as :func:`runtime_options`, with
    ``--gpu-layers`` going to the first GPU pool."""
    pool_id = gpu_pool(warden.governor.sample().snapshot) if gpu_layers else None
    return runtime_options(flags, gpu_layers, no_kv_offload, pool_id)


def _request(
    warden: Warden,
    model: str,
    provider: str | None,
    runtime: dict[str, Any],
    metadata_file: Path | None,
) -> tuple[ModelRef, dict[str, Any]]:
    ref = warden.model_ref(model, provider)
    options = dict(runtime)
    if metadata_file is not None:
        try:
            options["metadata"] = json.loads(read_metadata_file(metadata_file))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{metadata_file}: not readable JSON: {exc}",
                hint="save the provider's answer as JSON, e.g. `curl .../api/show -d ...`",
            ) from None
    return ref, options


def _breakdown_rows(estimate: MemoryEstimate) -> list[tuple[str, str, str]]:
    held = estimate.resident

    def resident(value: int | None) -> str:
        return "-" if value is None else format_bytes(value)

    rows = [
        (
            "weights",
            format_bytes(estimate.weights_bytes),
            resident(held.weights_bytes if held else None),
        ),
        ("KV cache", format_bytes(estimate.kv_cache_bytes), resident(held and held.kv_cache_bytes)),
        (
            "compute buffer",
            format_bytes(estimate.compute_bytes),
            resident(held and held.compute_bytes),
        ),
        (
            "runtime overhead",
            format_bytes(estimate.overhead_bytes),
            resident(held and held.overhead_bytes),
        ),
    ]
    if held is not None and held.mapped_weights_bytes:
        rows.append(("mapped weights (page cache)", "-", format_bytes(held.mapped_weights_bytes)))
    total = format_bytes(estimate.total_bytes)
    rows.append(("total", total, format_bytes(estimate.resident_bytes)))
    return rows


def _print_notes(app: AppContext, estimate: MemoryEstimate, extra: tuple[str, ...] = ()) -> None:
    for note in (*estimate.notes, *extra):
        app.output.line(f"  note: {note}")


@click.command()
@_model_options
@json_option
@pass_app
def estimate(
    app: AppContext,
    model: str,
    context_tokens: int,
    gpu_layers: int,
    no_kv_offload: bool,
    provider: str | None,
    metadata_file: Path | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """The memory MODEL takes at a context length: committed (what the runtime allocates) and
    resident (what its process holds), each by part.

    MODEL is a GGUF path, an Ollama model name (llama3.2:3b) or an LM Studio model
    (publisher/repo).
    """
    runtime = runtime_options(flags, gpu_layers, no_kv_offload)
    ref, options = _request(app.warden, model, provider, runtime, metadata_file)
    result = app.warden.estimate(ref, context_tokens, **options)
    if as_json:
        app.output.emit_json(result)
        return
    out = app.output
    title = (
        f"{model} at {context_tokens:,} tokens"
        + (f" ({flags['runtime']})" if flags.get("runtime") else "")
        + f" ({result.estimator}, {result.confidence} confidence)"
    )
    out.table(title, ["PART", "COMMITTED", "RESIDENT"], _breakdown_rows(result))
    if result.per_pool:
        out.table(
            "Per pool",
            ["POOL", "BYTES"],
            [(share.pool_id, format_bytes(share.bytes)) for share in result.per_pool],
        )
    _print_notes(app, result)


def _fit_json(plan: LoadPlan, search: MaxContext[LoadPlan] | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "fits": plan.fits,
        "fits_without_evicting": plan.fits and not plan.evicted,
        "headroom_bytes": min((p.headroom_bytes for p in plan.placement), default=None),
        "pools": [
            {**_pool_data(pool), "fits": pool.fits, "needed_bytes": pool.needed_bytes}
            for pool in plan.placement
        ],
        "needed_bytes": dict(plan.needed),
        "priority": plan.priority,
        "evictions": [
            {
                "model": m.name,
                "provider": m.provider,
                "instance": m.instance_id,
                "total_bytes": m.total_bytes,
            }
            for m in plan.evicted
        ],
        "reason": plan.reason,
        "estimate": plan.estimates[0],
    }
    if search is not None:
        data["max_context_tokens"] = search.context_tokens
        data["memory_limit_context_tokens"] = search.memory_limit_tokens
        data["notes"] = list(search.notes)
    return data


def _pool_data(pool: PoolFit) -> dict[str, Any]:
    return to_data(pool)


@click.command()
@_model_options
@click.option("--pool", "pool_id", default=None, help="Pool to fit into (default: the best).")
@click.option("--max-ctx", is_flag=True, help="Find the largest context that fits.")
@click.option(
    "--priority",
    type=int,
    default=None,
    help="The load's priority: models of this priority or lower may be evicted to make room "
    '(default: [models."MODEL"] priority, else 0), as `memwarden load` would.',
)
@json_option
@pass_app
def fit(
    app: AppContext,
    model: str,
    context_tokens: int,
    gpu_layers: int,
    no_kv_offload: bool,
    provider: str | None,
    metadata_file: Path | None,
    pool_id: str | None,
    max_ctx: bool,
    priority: int | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Whether MODEL fits in memory now, where, with how much headroom, and what a load would
    evict first to make room.

    The answer is the admission `memwarden load` goes through: system RAM budgets the resident
    figure, GPU and unified memory the committed one ([budget] ram_figure). Exits 0 when it fits
    (possibly after evicting) and 3 when it does not.
    """
    warden = app.warden
    governor = warden.governor
    reading = governor.sample()
    if gpu_layers and pool_id is None:
        pool_id = gpu_pool(reading.snapshot)
    runtime = runtime_options(flags, gpu_layers, no_kv_offload, pool_id)
    ref, options = _request(warden, model, provider, runtime, metadata_file)

    def fit_at(tokens: int) -> LoadPlan:
        return governor.plan_load(
            [ref],
            priority,
            context_tokens=tokens,
            options=options,
            reading=reading,
            pool_id=pool_id,
        )

    search = max_context(fit_at) if max_ctx else None
    plan = search.fit if search is not None else fit_at(context_tokens)
    if not plan.placement:
        # An unknown --pool is bad usage (exit 2), not a model that does not fit.
        raise click.UsageError(plan.reason or "the model cannot be placed in any pool")
    fits = plan.fits and (search is None or search.context_tokens is not None)

    if as_json:
        app.output.emit_json(_fit_json(plan, search))
    else:
        _print_fit(app, model, plan, search, warden.config.budget.safety_margin_percent)
    if not fits:
        raise click.exceptions.Exit(InsufficientMemory.exit_code)


def _print_fit(
    app: AppContext,
    model: str,
    plan: LoadPlan,
    search: MaxContext[LoadPlan] | None,
    margin_percent: float,
) -> None:
    out = app.output
    estimate = plan.estimates[0]
    if search is not None:
        if search.context_tokens is None:
            out.line(f"{model}: does not fit, even with {estimate.context_tokens:,} tokens")
        else:
            out.line(f"{model}: the largest context that fits is {search.context_tokens:,} tokens")
    if not plan.fits:
        verdict = "does NOT fit"
    elif plan.evicted:
        count = len(plan.evicted)
        verdict = f"fits after evicting {count} model{'' if count == 1 else 's'}"
    else:
        verdict = "fits"
    out.line(
        f"{model} at {estimate.context_tokens:,} tokens {verdict} "
        f"({estimate.estimator}, {estimate.confidence} confidence, priority {plan.priority})"
    )
    out.table(
        None,
        ["POOL", "AVAILABLE", "SAFETY MARGIN", "WEIGHTS", "KV+COMPUTE+OTHER", "HEADROOM", "FITS"],
        [
            (
                pool.pool_id,
                format_bytes(pool.available_bytes),
                f"{format_bytes(pool.safety_margin_bytes)} ({margin_percent:g}%)",
                format_bytes(pool.weights_bytes),
                format_bytes(pool.runtime_bytes),
                format_bytes(pool.headroom_bytes),
                "yes" if pool.fits else "no",
            )
            for pool in plan.placement
        ],
    )
    for evicted in plan.evicted:
        out.line(
            f"  a load would first evict {evicted.instance_id or evicted.name} "
            f"({evicted.provider}, {format_bytes(evicted.total_bytes)})"
        )
    if not plan.fits and plan.reason:
        out.line(f"  why: {plan.reason}")
    _print_notes(app, estimate, search.notes if search is not None else ())


def register(cli: click.Group) -> None:
    cli.add_command(estimate)
    cli.add_command(fit)
