"""`memwarden plan`: what the degradation ladder would do right now, without doing it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes
from memwarden.core import pressure
from memwarden.core.governor import DEFAULT_CONTEXT_TOKENS, action_target
from memwarden.core.serialize import from_data, to_data
from memwarden.core.types import Action, PressureLevel, PressureReading
from memwarden.core.warden import Warden

if TYPE_CHECKING:
    from memwarden.core.governor import LoadPlan


def expected_to_run(actions: Sequence[Action], needed: dict[str, int]) -> list[bool]:
    """Which of the ordered actions the ladder expects to take: in order, until the bytes they
    expect to free cover the largest need (it measures after each one, so this is a forecast)."""
    target = max(needed.values(), default=0)
    covered = 0
    flags = []
    for action in actions:
        runs = covered < target or (action.expected_freed_bytes == 0 and target > 0)
        flags.append(runs)
        if runs:
            covered += action.expected_freed_bytes
    return flags


@click.command()
@click.option(
    "--load",
    "load_models",
    multiple=True,
    metavar="MODEL",
    help="Also plan making room for MODEL (repeatable), as ensure() would.",
)
@click.option("--provider", help="The provider of the --load models.")
@click.option(
    "--priority",
    type=int,
    default=None,
    help='Priority of --load (default: [models."MODEL"] priority, else 0).',
)
@click.option(
    "--context",
    "context_tokens",
    type=click.IntRange(min=1),
    default=DEFAULT_CONTEXT_TOKENS,
    show_default=True,
    help="Context tokens the --load models are sized for.",
)
@json_option
@pass_app
def plan(
    app: AppContext,
    load_models: tuple[str, ...],
    provider: str | None,
    priority: int | None,
    context_tokens: int,
    as_json: bool,
) -> None:
    """Dry run: the pressure now, and the actions the ladder would take, in order (those of
    `memwarden serve`'s governor while it runs)."""
    from memwarden.serve.daemon import for_command

    daemon = for_command(app.warden.config.serve.token)
    if daemon is not None:
        found = daemon.call(
            "GET",
            "/memory/plan",
            load=list(load_models) or None,
            provider=provider,
            priority=priority,
            context=context_tokens,
        )
        reading, needed, actions, refusing, load_plan = plan_from_data(found)
    else:
        reading, needed, actions, refusing, load_plan = compute(
            app.warden, load_models, provider, priority, context_tokens
        )
    runs = expected_to_run(actions, needed)

    if as_json:
        data: dict[str, Any] = {
            "level": reading.level,
            "reasons": reading.reasons,
            "managed_bytes": reading.managed_bytes,
            "needed_bytes": needed,
            "refusing_loads": refusing,
            "actions": [
                {"order": i + 1, "expected_to_run": run, **_action_data(a)}
                for i, (a, run) in enumerate(zip(actions, runs, strict=True))
            ],
        }
        if load_plan is not None:
            data["load_plan"] = load_plan
            if refusing is not None and not load_plan.fits:
                data["load_plan_refused"] = refusing
        app.output.emit_json(data)
        return

    out = app.output
    out.line(f"Pressure: {reading.level}")
    for reason in reading.reasons:
        out.line(f"  {reason}")
    for key, value in needed.items():
        out.line(f"  to relieve: free {format_bytes(value)} ({key})")
    if refusing is not None:
        out.line(f"New loads: refused ({refusing})")
    out.line()
    if reading.level == PressureLevel.NORMAL:
        out.line("No pressure: the ladder would do nothing.")
    elif not actions:
        out.line("No strategy proposes anything: the ladder can do nothing more.")
    else:
        out.table(
            "The ladder would take, in this order (measuring after each)",
            ["#", "RUNS", "ACTION", "STRATEGY", "TARGET", "FREES", "COST", "WHAT"],
            [
                (
                    i + 1,
                    "yes" if run else "if still needed",
                    a.kind,
                    a.strategy,
                    action_target(a),
                    format_bytes(a.expected_freed_bytes),
                    f"{a.cost:g}",
                    a.description,
                )
                for i, (a, run) in enumerate(zip(actions, runs, strict=True))
            ],
        )
    if load_plan is not None:
        out.line()
        names = ", ".join(load_models)
        if not load_plan.fits:
            verdict = "refused now" if refusing is not None else "does not fit"
            out.line(f"Loading {names}: {verdict}. {load_plan.reason}")
        elif not load_plan.evictions:
            out.line(f"Loading {names}: fits without evicting anything.")
        else:
            out.line(f"Loading {names}: fits after evicting:")
            for action in load_plan.evictions:
                out.line(f"  {action.description}")


Plan = tuple[PressureReading, dict[str, int], list[Action], str | None, "LoadPlan | None"]


def compute(
    warden: Warden,
    load_models: Sequence[str],
    provider: str | None,
    priority: int | None,
    context_tokens: int,
) -> Plan:
    """What `memwarden plan` shows: the reading, what it needs freed, the ladder's actions in
    order, why loads are refused (if they are), and the plan for ``load_models``. `memwarden
    serve` answers the same from its governor (``GET /memory/plan``)."""
    governor = warden.governor
    reading = governor.sample()
    needed = dict(pressure.relief_needed(reading, warden.config.pressure))
    actions = governor.propose(reading, needed) if reading.level > PressureLevel.NORMAL else []
    refusing = governor.refusing(reading)
    load_plan = None
    if load_models:
        refs = [warden.model_ref(m, provider) for m in load_models]
        load_plan = governor.plan_load(
            refs, priority, context_tokens=context_tokens, reading=reading
        )
    return reading, needed, list(actions), refusing, load_plan


def plan_data(plan: Plan) -> dict[str, Any]:
    """A :data:`Plan` as JSON-ready data (what ``GET /memory/plan`` answers)."""
    reading, needed, actions, refusing, load_plan = plan
    return {
        "reading": to_data(reading),
        "needed": needed,
        "actions": [to_data(a) for a in actions],
        "refusing": refusing,
        "load_plan": to_data(load_plan) if load_plan is not None else None,
    }


def plan_from_data(data: dict[str, Any]) -> Plan:
    """The inverse of :func:`plan_data`."""
    from memwarden.core.governor import LoadPlan

    load_plan = data.get("load_plan")
    return (
        from_data(data["reading"], PressureReading),
        {str(k): int(v) for k, v in data["needed"].items()},
        [from_data(a, Action) for a in data["actions"]],
        data.get("refusing"),
        from_data(load_plan, LoadPlan) if load_plan is not None else None,
    )


def _action_data(action: Action) -> dict[str, Any]:
    return {
        "kind": str(action.kind),
        "strategy": action.strategy,
        "target": action_target(action),
        "model": action.model,
        "provider": action.provider,
        "pool_id": action.pool_id,
        "expected_freed_bytes": action.expected_freed_bytes,
        "cost": action.cost,
        "description": action.description,
        "instance_id": action.instance_id,
        "context_tokens": action.context_tokens,
        "from_context_tokens": action.from_context_tokens,
        "session_id": action.session_id,
        "budget_tokens": action.budget_tokens,
    }


def register(cli: click.Group) -> None:
    cli.add_command(plan)
