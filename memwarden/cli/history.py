"""`memwarden history`, `report` and `recommend`: what the stored history says."""

from __future__ import annotations

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes
from memwarden.core import insights
from memwarden.core.errors import MemwardenError
from memwarden.core.serialize import to_data

SINCE_HELP = (
    "How far back: a duration before the newest sample (90m, 24h, 7d, 2w) or a UTC date "
    "(2026-11-20). Default: {default}."
)


def _since(default: str) -> click.Option:
    return click.option("--since", default=None, help=SINCE_HELP.format(default=default))


@click.command()
@_since("24h")
@click.option("--model", default=None, help="Only this model's requests, actions and events.")
@click.option("--width", default=60, show_default=True, help="Columns of the chart.")
@json_option
@pass_app
def history(
    app: AppContext, since: str | None, model: str | None, width: int, as_json: bool
) -> None:
    """Pool usage and pressure levels over time, with the events and actions of the window."""
    window = insights.load(app.warden, since, default="24h")
    if model is not None:
        window = window.for_model(model)
    if as_json:
        app.output.emit_json(
            {
                "start": window.start,
                "end": window.end,
                "columns": insights.columns(window, width),
                "events": window.events,
                "actions": window.actions,
                "usage": insights.usage_by_model(window.usage),
            }
        )
        return
    out = app.output
    if not window.samples:
        out.line("No memory samples in this window: has `memwarden watch` run with [state] on?")
    else:
        for line in insights.chart(window, width=width):
            out.line(line)
        out.line("levels: . NORMAL  w WARNING  C CRITICAL  E EMERGENCY (the worst of each column)")
    changes = [e for e in window.events if e.kind != "action-taken"]
    if changes:
        out.line()
        out.table(
            "Events",
            ["WHEN (UTC)", "KIND", "WHAT"],
            [(insights.when(e.at), e.kind, e.message) for e in changes[-20:]],
        )
    if window.actions:
        out.line()
        out.table(
            "Actions",
            ["WHEN (UTC)", "ACTION", "MODEL", "FREED", "LEVEL"],
            [
                (
                    insights.when(a.at),
                    f"{a.kind} ({a.strategy})",
                    a.model,
                    format_bytes(a.measured_freed_bytes) if a.ok else f"failed: {a.error}",
                    f"{a.level_before} -> {a.level_after}",
                )
                for a in window.actions[-20:]
            ],
        )
    if model is not None:
        _usage_table(app, insights.usage_by_model(window.usage))


def _usage_table(app: AppContext, usage: list[insights.ModelUsage]) -> None:
    if not usage:
        return
    app.output.line()
    app.output.table(
        "Requests",
        ["MODEL", "PROVIDER", "REQUESTS", "FAILED", "LATENCY p50", "p95", "FIRST TOKEN", "TOKENS"],
        [
            (
                u.model,
                u.provider,
                u.requests,
                u.failures,
                f"{u.median_latency_s:.2f} s",
                f"{u.p95_latency_s:.2f} s",
                "-" if u.median_ttft_s is None else f"{u.median_ttft_s:.2f} s",
                f"{u.prompt_tokens:,} in / {u.completion_tokens:,} out",
            )
            for u in usage
        ],
    )


@click.command()
@_since("7d")
@json_option
@pass_app
def report(app: AppContext, since: str | None, as_json: bool) -> None:
    """What happened (time at each level, peaks), what was done, and what it freed."""
    summary = insights.report(insights.load(app.warden, since, default="7d"))
    writers = _sessions(app, summary.start)
    if as_json:
        app.output.emit_json({**to_data(summary), "sessions": writers})
        return
    out = app.output
    out.line(
        f"From {insights.when(summary.start)} to {insights.when(summary.end)} UTC "
        f"({summary.samples:,} samples)"
    )
    out.line()
    out.line("What happened")
    shares = ", ".join(
        f"{level} {share:.1%}" for level, share in summary.time_at_level.items() if share
    )
    out.line(f"  time at each level: {shares or 'no samples'}")
    entered = ", ".join(f"{level} {n}" for level, n in summary.level_changes.items())
    out.line(f"  level changes into: {entered or 'none'}")
    for pool, (percent, at) in summary.peaks.items():
        out.line(f"  peak use of {pool}: {percent:.1f} % at {insights.when(at)}")
    out.line()
    out.line("What was done")
    if not summary.actions:
        out.line("  nothing: no action was needed")
    for action in summary.actions:
        failed = f", {action.failed} failed" if action.failed else ""
        models = f" ({', '.join(action.models)})" if action.models else ""
        out.line(
            f"  {action.kind} by {action.strategy}: {action.taken} taken{failed}, "
            f"freed {format_bytes(action.freed_bytes)}{models}"
        )
    out.line(f"  freed in all: {format_bytes(summary.freed_bytes)}")
    _usage_table(app, list(summary.usage))
    if writers:
        out.line()
        out.table(
            "Processes that wrote this history",
            ["PID", "HOST", "VERSION", "STARTED (UTC)", "LAST SEEN", "ENDED"],
            [
                (
                    w["pid"],
                    w["host"],
                    w["version"],
                    insights.when(w["started_at"]),
                    insights.when(w["last_seen_at"]),
                    insights.when(w["ended_at"]) if w["ended_at"] else "no (running or killed)",
                )
                for w in writers
            ],
        )


def _sessions(app: AppContext, since: float) -> list[dict[str, object]]:
    """The writer processes, where the history is the built-in sqlite-state store."""
    enabled = {i.name for i in app.warden.plugins.plugin_list() if i.state == "enabled"}
    if "sqlite-state" not in enabled:
        return []
    from memwarden.plugins import sqlite_state

    return sqlite_state.sessions(app.warden.config, since)


@click.command()
@_since("7d")
@json_option
@pass_app
def recommend(app: AppContext, since: str | None, as_json: bool) -> None:
    """Models to unload or keep, context lengths and max_loaded_models, each with its evidence."""
    window = insights.load(app.warden, since, default="7d")
    try:
        loaded = app.warden.loaded_models()
    except MemwardenError:
        loaded = []
    advice = insights.recommend(window, loaded)
    if as_json:
        app.output.emit_json(advice)
        return
    out = app.output
    if not advice:
        out.line("No recommendation: the history of this window is too short to judge.")
    for n, item in enumerate(advice, start=1):
        out.line(f"{n}. {item.advice}")
        for evidence in item.evidence:
            out.line(f"     because {evidence}")


def register(cli: click.Group) -> None:
    cli.add_command(history)
    cli.add_command(report)
    cli.add_command(recommend)
