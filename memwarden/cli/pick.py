"""`memwarden pick`: which model would serve a request now, and why."""

from __future__ import annotations

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes
from memwarden.core import picking
from memwarden.core.types import ModelRequest


@click.command()
@click.option(
    "--task",
    type=click.Choice(picking.TASKS),
    default="chat",
    show_default=True,
    help="What the model is for.",
)
@click.option("--min-ctx", "min_ctx", type=click.IntRange(min=0), default=0, help="Tokens.")
@click.option(
    "--prefer", multiple=True, help="A model or [pick.aliases] name to choose first (repeatable)."
)
@json_option
@pass_app
def pick(app: AppContext, task: str, min_ctx: int, prefer: tuple[str, ...], as_json: bool) -> None:
    """Choose the model for a request through the pick_model plugins, with their reasons."""
    request = ModelRequest(task=task, min_context_tokens=min_ctx, preferred=prefer)
    choice, _ = picking.pick(app.warden, request)
    if as_json:
        app.output.emit_json(choice)
        return
    model = choice.model
    size = "" if model.size_bytes is None else f", {format_bytes(model.size_bytes)}"
    app.output.line(f"{model.name} ({model.provider}{size}), chosen by {choice.chooser}")
    for reason in choice.reasons:
        app.output.line(f"  {reason}")


def register(cli: click.Group) -> None:
    cli.add_command(pick)
