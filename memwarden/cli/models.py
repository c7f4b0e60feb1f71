"""`memwarden models`, `load`, `unload` and `generate`: models across every provider."""

from __future__ import annotations

import time

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes
from memwarden.core.governor import Governor
from memwarden.core.types import LoadedModel, ModelRef

_PROVIDER_OPTION = click.option(
    "--provider",
    help="The provider to use (ollama, lmstudio, llamacpp...); default: the first reachable "
    "one that offers the model, the embedded llama.cpp last.",
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
    """Models each provider can load and those loaded now; unreachable providers say why."""
    warden = app.warden
    statuses = warden.provider_statuses()
    available = warden.available_models()
    loaded = warden.loaded_models()
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
@click.option(
    "--priority",
    type=int,
    default=0,
    show_default=True,
    help="Models of this priority or lower may be evicted to make room; higher ones are kept.",
)
@_PROVIDER_OPTION
@json_option
@pass_app
def load(
    app: AppContext,
    model: str,
    context_tokens: int | None,
    keep_alive_s: float | None,
    priority: int,
    provider: str | None,
    as_json: bool,
) -> None:
    """Load MODEL (a name, or for the embedded llama.cpp a GGUF path), making room first.

    Exits 3 when it cannot fit even after evicting every model that may be evicted.
    """
    # Through the governor: room is made first (lower-priority models evicted), or the load is
    # refused with the reason, rather than letting the runtime run the machine out of memory.
    loaded = Governor(app.warden).load(
        ModelRef(name=model, provider=provider),
        priority,
        context_tokens=context_tokens,
        keep_alive_s=keep_alive_s,
    )
    if as_json:
        app.output.emit_json(loaded)
    else:
        instance = f" as {loaded.instance_id}" if loaded.instance_id else ""
        app.output.line(
            f"loaded {loaded.name}{instance} in {loaded.provider}: "
            f"{format_bytes(loaded.total_bytes)}, context {loaded.context_tokens or '-'}"
        )
    if app.warden.provider(loaded.provider).fallback:
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
    """Unload MODEL (a model name or an instance identifier) so its memory returns."""
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
@_PROVIDER_OPTION
@json_option
@pass_app
def generate(
    app: AppContext,
    model: str,
    prompt: str,
    max_tokens: int | None,
    provider: str | None,
    as_json: bool,
) -> None:
    """Send PROMPT to MODEL through memwarden, which counts the call in its usage history."""
    result = app.warden.generate(model, prompt, provider=provider, max_tokens=max_tokens)
    if as_json:
        app.output.emit_json(result)
    else:
        app.output.line(result.text)


def register(cli: click.Group) -> None:
    for command in (models, load, unload, generate):
        cli.add_command(command)
