"""`memwarden models`, `load`, `unload` and `generate`: models across every provider."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.estimate import load_runtime_options, runtime_flags
from memwarden.cli.output import format_bytes
from memwarden.core.serialize import from_data, to_data
from memwarden.core.types import LoadedModel

if TYPE_CHECKING:  # the daemon client (httpx) is imported only when a command needs it
    from memwarden.serve.daemon import Daemon

_PROVIDER_OPTION = click.option(
    "--provider",
    help="The provider to use (ollama, lmstudio, llamacpp...); default: the first reachable "
    "one that offers the model, the embedded llama.cpp last.",
)


_PRIORITY_OPTION = click.option(
    "--priority",
    type=int,
    default=None,
    help="Models of this priority or lower may be evicted to make room; higher ones are kept "
    '(default: [models."MODEL"] priority, else 0).',
)


def _expires(model: LoadedModel) -> str | None:
    if model.expires_at is None:
        return None
    seconds = model.expires_at - time.time()
    if seconds > 3600 * 24 * 365:
        return "never"
    return f"in {max(0, seconds):.0f} s"


@click.command()
@json_option
@pass_app
def models(app: AppContext, as_json: bool) -> None:
    """Models each provider can load and those loaded now; unreachable providers say why.

    While `memwarden serve` runs, the loaded models are the ones its governor sees."""
    warden = app.warden
    statuses = warden.provider_statuses()
    available = warden.available_models()
    daemon = _daemon(app)
    loaded = daemon.loaded_models() if daemon is not None else warden.loaded_models()
    if as_json:
        app.output.emit_json({"providers": statuses, "available": available, "loaded": loaded})
        return
    out = app.output
    for status in statuses:
        if status.reachable:
            version = f" {status.version}" if status.version else ""
            out.line(f"{status.name}: reachable{version}")
        else:
            out.line(f"{status.name}: unreachable ({status.reason})")
    if not statuses:
        out.line("No provider plugin is registered.")
    out.line()
    out.table(
        "Available models",
        ["PROVIDER", "MODEL", "SIZE", "FAMILY", "PARAMS", "QUANT", "MAX CONTEXT"],
        [
            (
                m.provider,
                m.name,
                format_bytes(m.size_bytes),
                m.family,
                m.parameters,
                m.quantization,
                m.max_context_tokens,
            )
            for m in available
        ],
    )
    out.line()
    if not loaded:
        out.line("No model is loaded.")
        return
    out.table(
        "Loaded models",
        ["PROVIDER", "MODEL", "INSTANCE", "SIZE", "ON GPU", "CONTEXT", "EXPIRES", "IN FLIGHT"],
        [
            (
                m.provider,
                m.name,
                m.instance_id,
                format_bytes(m.total_bytes),
                format_bytes(m.gpu_bytes),
                m.context_tokens,
                _expires(m),
                m.requests_in_flight,
            )
            for m in loaded
        ],
    )


@click.command()
@click.argument("model")
@click.option("--ctx", "context_tokens", type=click.IntRange(min=1), help="Context length.")
@click.option(
    "--keep-alive",
    "keep_alive_s",
    type=float,
    help="Seconds the model stays loaded while idle; negative: until unloaded.",
)
@runtime_flags
@_PRIORITY_OPTION
@_PROVIDER_OPTION
@json_option
@pass_app
def load(
    app: AppContext,
    model: str,
    context_tokens: int | None,
    keep_alive_s: float | None,
    gpu_layers: int,
    no_kv_offload: bool,
    priority: int | None,
    provider: str | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Load MODEL (a name, or for the embedded llama.cpp a GGUF path), making room first.

    The runtime options (--batch, --kv-type, --runtime...) size the load as `memwarden fit`
    would and go to the provider, which loads with those it can honour and logs the others.
    Exits 3 when it cannot fit even after evicting every model that may be evicted. While
    `memwarden serve` runs, its governor loads the model (an embedded one then outlives this
    command).
    """
    options = load_runtime_options(app.warden, flags, gpu_layers, no_kv_offload)
    daemon = _daemon(app)
    if daemon is not None:
        from memwarden.serve.daemon import component_path

        data = daemon.call(
            "POST",
            component_path(model, "load"),
            ctx=context_tokens,
            priority=priority,
            provider=provider,
            keep_alive=keep_alive_s,
            options=json.dumps(options) if options else None,
        )
        loaded = from_data(data["loaded"], LoadedModel)
        evicted = tuple(from_data(m, LoadedModel) for m in data["evicted"])
        chosen_priority = int(data["priority"])
    else:
        # Through the governor: room is made first (lower-priority models evicted), or the load
        # is refused with the reason, rather than letting the runtime run out of memory.
        outcome = app.warden.governor.admit_and_load(
            app.warden.model_ref(model, provider, need_provider=True),
            priority,
            context_tokens=context_tokens,
            keep_alive_s=keep_alive_s,
            options=options,
        )
        loaded, evicted = outcome.loaded, outcome.plan.evicted
        chosen_priority = outcome.plan.priority
    if as_json:
        app.output.emit_json(
            {**to_data(loaded), "priority": chosen_priority, "evicted": list(evicted)}
        )
    else:
        for model_evicted in evicted:
            app.output.line(
                f"evicted {model_evicted.instance_id or model_evicted.name} from "
                f"{model_evicted.provider} to make room: "
                f"{format_bytes(model_evicted.total_bytes)} freed"
            )
        instance = f" as {loaded.instance_id}" if loaded.instance_id else ""
        app.output.line(
            f"loaded {loaded.name}{instance} in {loaded.provider}: "
            f"{format_bytes(loaded.total_bytes)}, context {loaded.context_tokens or '-'}, "
            f"priority {chosen_priority}"
        )
    if daemon is None and app.warden.provider(loaded.provider).fallback:
        app.output.warn(
            f"note: {loaded.provider} models live in the process that loads them; this one is "
            "unloaded when this command exits (see docs/providers.md)"
        )


@click.command()
@click.argument("model")
@_PROVIDER_OPTION
@click.option(
    "--emergency", is_flag=True, help="Unload even while it serves requests made through memwarden."
)
@json_option
@pass_app
def unload(
    app: AppContext, model: str, provider: str | None, emergency: bool, as_json: bool
) -> None:
    """Unload MODEL (a model name or an instance identifier) so its memory returns (through
    `memwarden serve` while it runs)."""
    daemon = _daemon(app)
    if daemon is not None:
        from memwarden.serve.daemon import component_path

        data = daemon.call(
            "POST",
            component_path(model, "unload"),
            provider=provider,
            emergency=1 if emergency else None,
        )
        unloaded = [from_data(m, LoadedModel) for m in data["unloaded"]]
    else:
        unloaded = app.warden.unload(model, provider=provider, emergency=emergency)
    if as_json:
        app.output.emit_json({"unloaded": unloaded})
        return
    for m in unloaded:
        instance = f" ({m.instance_id})" if m.instance_id and m.instance_id != m.name else ""
        app.output.line(
            f"unloaded {m.name}{instance} from {m.provider}: {format_bytes(m.total_bytes)} freed"
        )


@click.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Stop after this many tokens.")
@runtime_flags
@_PRIORITY_OPTION
@_PROVIDER_OPTION
@json_option
@pass_app
def generate(
    app: AppContext,
    model: str,
    prompt: str,
    max_tokens: int | None,
    gpu_layers: int,
    no_kv_offload: bool,
    priority: int | None,
    provider: str | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Send PROMPT to MODEL through memwarden, which counts the call in its usage history.

    A model that is not loaded is loaded first as `memwarden load` would, with the runtime
    options given: room is made, or the call is refused with exit 3.
    """
    options = load_runtime_options(app.warden, flags, gpu_layers, no_kv_offload)
    result = app.warden.generate(
        model, prompt, provider=provider, max_tokens=max_tokens, priority=priority, options=options
    )
    if as_json:
        app.output.emit_json(result)
    else:
        app.output.line(result.text)


def _daemon(app: AppContext) -> Daemon | None:
    """The running `memwarden serve` to go through, or None to act in this process."""
    from memwarden.serve.daemon import for_command

    return for_command(app.warden.config.serve.token)


def register(cli: click.Group) -> None:
    for command in (models, load, unload, generate):
        cli.add_command(command)
