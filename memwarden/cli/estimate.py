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
from memwarden.core.serialize import to_data
from memwarden.core.types import MemoryEstimate, ModelRef, PoolKind
from memwarden.core.warden import Warden
from memwarden.estimation.sizing import KV_CACHE_TYPES

DEFAULT_CONTEXT_TOKENS = 4096


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
        click.option(
            "--kv-type",
            type=click.Choice(KV_CACHE_TYPES, case_sensitive=False),
            default="f16",
            show_default=True,
            help="KV cache type (llama.cpp --cache-type-k/-v).",
        ),
        click.option(
            "--parallel",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Sequences served at once; each gets --ctx tokens.",
        ),
        click.option(
            "--gpu-layers",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Layers offloaded to a GPU (llama.cpp -ngl); the rest stay in system RAM.",
        ),
        click.option(
            "--no-flash-attn",
            is_flag=True,
            help="Size for flash attention off (the compute buffer then holds full scores).",
        ),
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


def _request(
    warden: Warden,
    model: str,
    provider: str | None,
    kv_type: str,
    parallel: int,
    gpu_layers: int,
    no_flash_attn: bool,
    metadata_file: Path | None,
    pool_id: str | None = None,
) -> tuple[ModelRef, dict[str, Any]]:
    ref = warden.model_ref(model, provider)
    options: dict[str, Any] = {"kv_type": kv_type.lower(), "parallel": parallel}
    if gpu_layers:
        options["gpu_layers"] = gpu_layers
        options["pool_id"] = pool_id
    if no_flash_attn:
        options["flash_attention"] = False
    if metadata_file is not None:
        try:
            options["metadata"] = json.loads(metadata_file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{metadata_file}: not readable JSON: {exc}",
                hint="save the provider's answer as JSON, e.g. `curl .../api/show -d ...`",
            ) from None
    return ref, options


def _breakdown_rows(estimate: MemoryEstimate) -> list[tuple[str, str]]:
    return [
        ("weights", format_bytes(estimate.weights_bytes)),
        ("KV cache", format_bytes(estimate.kv_cache_bytes)),
        ("compute buffer", format_bytes(estimate.compute_bytes)),
        ("runtime overhead", format_bytes(estimate.overhead_bytes)),
        ("total", format_bytes(estimate.total_bytes)),
    ]


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
    kv_type: str,
    parallel: int,
    gpu_layers: int,
    no_flash_attn: bool,
    provider: str | None,
    metadata_file: Path | None,
    as_json: bool,
) -> None:
    """The memory MODEL takes at a context length: weights, KV cache, compute, overhead.

    MODEL is a GGUF path, an Ollama model name (llama3.2:3b) or an LM Studio model
    (publisher/repo).
    """
    ref, options = _request(
        app.warden, model, provider, kv_type, parallel, gpu_layers, no_flash_attn, metadata_file
    )
    result = app.warden.estimate(ref, context_tokens, **options)
    if as_json:
        app.output.emit_json(result)
        return
    out = app.output
    title = (
        f"{model} at {context_tokens:,} tokens x {parallel}, {kv_type} KV cache "
        f"({result.estimator}, {result.confidence} confidence)"
    )
    out.table(title, ["PART", "BYTES"], _breakdown_rows(result))
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
    kv_type: str,
    parallel: int,
    gpu_layers: int,
    no_flash_attn: bool,
    provider: str | None,
    metadata_file: Path | None,
    pool_id: str | None,
    max_ctx: bool,
    priority: int | None,
    as_json: bool,
) -> None:
    """Whether MODEL fits in memory now, where, with how much headroom, and what a load would
    evict first to make room.

    The answer is the admission `memwarden load` goes through. Exits 0 when it fits (possibly
    after evicting) and 3 when it does not.
    """
    warden = app.warden
    governor = warden.governor
    reading = governor.sample()
    if gpu_layers and pool_id is None:
        gpus = [pool.id for pool in reading.snapshot.pools if pool.kind is PoolKind.GPU]
        if not gpus:
            raise click.UsageError("--gpu-layers needs a GPU pool, and none is reported")
        pool_id = gpus[0]
    ref, options = _request(
        warden,
        model,
        provider,
        kv_type,
        parallel,
        gpu_layers,
        no_flash_attn,
        metadata_file,
        pool_id,
    )

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
