"""`memwarden watch`: the long-running governor, with a live view or JSON lines."""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes
from memwarden.cli.params import Seconds
from memwarden.core.governor import Governor, RoundReport
from memwarden.core.monitor import Monitor
from memwarden.core.serialize import to_data
from memwarden.core.types import Event, PressureReading
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl

if TYPE_CHECKING:
    from rich.console import Group

_LEVEL_STYLE = {"NORMAL": "green", "WARNING": "yellow", "CRITICAL": "red", "EMERGENCY": "bold red"}


class _EventTap:
    """Receives every event through the on_event hook, like any plugin would."""

    def __init__(self, sink: collections.deque[Event] | None, json_lines: bool) -> None:
        self.sink = sink
        self.json_lines = json_lines

    @hookimpl
    def on_event(self, event: Event, warden: Warden) -> None:
        if self.sink is not None:
            self.sink.append(event)
        if self.json_lines:
            _line({"type": "event", **to_data(event)})


class _PipeClosed(Exception):
    """Whoever read the output has gone (``memwarden watch | head``)."""


def _line(data: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise _PipeClosed() from None


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it. The live view writes nothing to a
    pipe until it stops, so it would never see the pipe close by writing."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _silence_stdout() -> None:
    """After the reader of stdout has gone, point stdout at /dev/null so that the interpreter's
    final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextmanager
def _stop_on_signals(monitor: Monitor, received: list[str]) -> Iterator[None]:
    def handler(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        monitor.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.command()
@click.option("--once", is_flag=True, help="Take one sample (and one ladder round), then exit.")
@click.option(
    "--duration",
    type=Seconds(),
    metavar="S",
    help="Exit after S seconds (default: until a signal).",
)
@click.option("--no-psi", is_flag=True, help="Do not arm the Linux PSI trigger; sample on a timer.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Watch and report, but take no action (the ladder's proposals: `memwarden plan`).",
)
@json_option
@pass_app
def watch(
    app: AppContext,
    once: bool,
    duration: float | None,
    no_psi: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Run the governor: sample memory, relieve pressure, report. Stops on SIGINT/SIGTERM."""
    warden = app.warden
    governor = warden.governor
    governor.acting = not dry_run
    events: collections.deque[Event] = collections.deque(maxlen=8)
    tap = _EventTap(None if as_json else events, as_json)
    warden.plugins.register(tap)
    try:
        samples, why = _run(app, governor, once, duration, no_psi, dry_run, as_json, events)
    except (_PipeClosed, BrokenPipeError):
        _silence_stdout()
        return
    finally:
        warden.plugins.pm.unregister(tap)
    if not as_json:
        app.output.line(f"memwarden watch stopped ({why}) after {samples} sample(s).")


def _run(
    app: AppContext,
    governor: Governor,
    once: bool,
    duration: float | None,
    no_psi: bool,
    dry_run: bool,
    as_json: bool,
    events: collections.deque[Event],
) -> tuple[int, str]:
    received: list[str] = []
    started = time.monotonic()

    with Monitor(governor, psi=False if no_psi else None) as monitor:
        if as_json:
            _line(
                {
                    "type": "started",
                    "psi": monitor.psi_status.armed,
                    "psi_detail": monitor.psi_status.detail,
                    "events": [s.detail for s in monitor.source_status if s.armed],
                    "dry_run": dry_run,
                }
            )

            def report(reading: PressureReading, round_: RoundReport | None) -> None:
                _line({"type": "reading", **_reading_data(reading, governor)})

            monitor.on_reading = report
            with _stop_on_signals(monitor, received):
                monitor.run(duration_s=duration, once=once)
        else:
            from rich.live import Live

            console = app.output.console
            with Live(console=console, auto_refresh=False, transient=False) as live:

                def render(reading: PressureReading, round_: RoundReport | None) -> None:
                    if not console.is_terminal and _reader_gone():
                        raise _PipeClosed()
                    try:
                        live.update(_view(reading, governor, monitor, events), refresh=True)
                    except BrokenPipeError:
                        raise _PipeClosed() from None

                monitor.on_reading = render
                with _stop_on_signals(monitor, received):
                    monitor.run(duration_s=duration, once=once)
            if not console.is_terminal:
                console.line()
        samples = monitor.samples

    why = f"signal {received[0]}" if received else ("once" if once else "duration elapsed")
    if as_json:
        _line(
            {
                "type": "stopped",
                "reason": why,
                "samples": samples,
                "seconds": round(time.monotonic() - started, 3),
            }
        )
    return samples, why


def _reading_data(reading: PressureReading, governor: Governor) -> dict[str, Any]:
    return {
        "level": reading.level.name,
        "at": reading.taken_at,
        "managed_bytes": reading.managed_bytes,
        "loaded_models": len(governor.loaded_models()),
        "refusing_loads": governor.refusing_reason,
        "reasons": list(reading.reasons),
        "pools": [
            {
                "id": p.pool_id,
                "level": p.level.name,
                "used_percent": p.used_percent,
                "available_bytes": p.available_bytes,
            }
            for p in reading.pools
        ],
    }


def _view(
    reading: PressureReading,
    governor: Governor,
    monitor: Monitor,
    events: collections.deque[Event],
) -> Group:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    level = reading.level.name
    header = Text.assemble(
        ("memwarden watch  ", "bold"),
        ("pressure ", ""),
        (level, _LEVEL_STYLE[level]),
        (f"   samples {monitor.samples}   PSI {monitor.psi_status.detail}", "dim"),
    )
    pools = Table(box=None, pad_edge=False)
    for column in ("POOL", "USED %", "AVAILABLE", "LEVEL"):
        pools.add_column(column)
    for pool in reading.pools:
        pools.add_row(
            pool.pool_id,
            f"{pool.used_percent:.1f}",
            format_bytes(pool.available_bytes),
            Text(pool.level.name, style=_LEVEL_STYLE[pool.level.name]),
        )
    models = governor.loaded_models()
    summary = Text(
        f"managed models: {len(models)} using {format_bytes(reading.managed_bytes)}"
        + (f"   new loads refused: {governor.refusing_reason}" if governor.refusing_reason else "")
    )
    recent = Table(box=None, pad_edge=False, title="recent events", title_justify="left")
    recent.add_column("TIME")
    recent.add_column("EVENT")
    recent.add_column("WHAT", overflow="fold")
    for event in events:
        recent.add_row(
            time.strftime("%H:%M:%S", time.localtime(event.at)), event.kind, event.message
        )
    parts: list[Any] = [header, pools, summary]
    if events:
        parts.append(recent)
    return Group(*parts)


def register(cli: click.Group) -> None:
    cli.add_command(watch)
