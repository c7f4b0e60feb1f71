"""`memwarden estimate` and `memwarden fit`: what a model costs, and whether it fits.

``fit`` exits 0 when the model fits, 3 when it does not (the code of InsufficientMemory, so a
script can tell "does not fit" from a failure, 1, or bad usage, 2); with ``--json`` the answer is
printed either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes
from memwarden.core.budget import FitResult, MaxContext, PoolFit, check_fit, max_context
from memwarden.core.errors import ConfigError, InsufficientMemory
from memwarden.core.serialize import to_data
from memwarden.core.types import MemoryEstimate, ModelRef, PoolKind
from memwarden.estimation.model_files import looks_like_path, read_metadata_file
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
            "--provider", default=None, help="Where the name comes from: ollama or lmstudio."
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
    model: str,
    provider: str | None,
    kv_type: str,
    parallel: int,
    gpu_layers: int,
    no_flash_attn: bool,
    metadata_file: Path | None,
    pool_id: str | None = None,
) -> tuple[ModelRef, dict[str, Any]]:
    ref = ModelRef(name=model, provider=provider, path=model if looks_like_path(model) else None)
    options: dict[str, Any] = {"kv_type": kv_type.lower(), "parallel": parallel}
    if gpu_layers:
        options["gpu_layers"] = gpu_layers
        options["pool_id"] = pool_id
    if no_flash_attn:
        options["flash_attention"] = False
    if metadata_file is not None:
        try:
            options["metadata"] = json.loads(read_metadata_file(metadata_file))
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
        model, provider, kv_type, parallel, gpu_layers, no_flash_attn, metadata_file
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


def _fit_json(result: FitResult, search: MaxContext | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "fits": result.fits,
        "headroom_bytes": result.headroom_bytes,
        "pools": [
            {**_pool_data(pool), "fits": pool.fits, "needed_bytes": pool.needed_bytes}
            for pool in result.pools
        ],
        "reason": result.reason,
        "estimate": result.estimate,
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
    as_json: bool,
) -> None:
    """Whether MODEL fits in memory now, where, and with how much headroom.

    Exits 0 when it fits and 3 when it does not.
    """
    warden = app.warden
    snapshot = warden.snapshot()
    if gpu_layers and pool_id is None:
        gpus = [pool.id for pool in snapshot.pools if pool.kind is PoolKind.GPU]
        if not gpus:
            raise click.UsageError("--gpu-layers needs a GPU pool, and none is reported")
        pool_id = gpus[0]
    ref, options = _request(
        model, provider, kv_type, parallel, gpu_layers, no_flash_attn, metadata_file, pool_id
    )
    budget = warden.config.budget

    def fit_at(tokens: int) -> FitResult:
        return check_fit(warden.estimate(ref, tokens, **options), snapshot, budget, pool_id)

    search = max_context(fit_at) if max_ctx else None
    result = search.fit if search is not None else fit_at(context_tokens)
    if result.reason and not result.pools:
        # An unknown --pool is bad usage (exit 2), not a model that does not fit.
        raise click.UsageError(result.reason)
    fits = result.fits and (search is None or search.context_tokens is not None)

    if as_json:
        app.output.emit_json(_fit_json(result, search))
    else:
        _print_fit(app, model, result, search, budget.safety_margin_percent)
    if not fits:
        raise click.exceptions.Exit(InsufficientMemory.exit_code)


def _print_fit(
    app: AppContext,
    model: str,
    result: FitResult,
    search: MaxContext | None,
    margin_percent: float,
) -> None:
    out = app.output
    estimate = result.estimate
    if result.reason:
        out.line(f"{model}: cannot place it: {result.reason}")
        return
    if search is not None:
        if search.context_tokens is None:
            out.line(f"{model}: does not fit, even with {estimate.context_tokens:,} tokens")
        else:
            out.line(f"{model}: the largest context that fits is {search.context_tokens:,} tokens")
    verdict = "fits" if result.fits else "does NOT fit"
    out.line(
        f"{model} at {estimate.context_tokens:,} tokens {verdict} "
        f"({estimate.estimator}, {estimate.confidence} confidence)"
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
            for pool in result.pools
        ],
    )
    _print_notes(app, estimate, search.notes if search is not None else ())


def register(cli: click.Group) -> None:
    cli.add_command(estimate)
    cli.add_command(fit)
