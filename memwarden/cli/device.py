"""`memwarden device`: every memory pool the device plugins see, and why some see none."""

from __future__ import annotations

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes
from memwarden.core.types import MemoryPool


def _psi(pool: MemoryPool) -> str | None:
    if pool.psi_some_avg10 is None:
        return None
    return f"{pool.psi_some_avg10:.2f}/{pool.psi_full_avg10 or 0.0:.2f}"


@click.command()
@json_option
@pass_app
def device(app: AppContext, as_json: bool) -> None:
    """Memory pools (RAM, GPUs, unified memory) with their limits, pressure and processes."""
    snapshot = app.warden.snapshot()
    if as_json:
        app.output.emit_json(
            {
                "pools": snapshot.pools,
                "unavailable": snapshot.unavailable,
                "taken_at": snapshot.taken_at,
            }
        )
        return
    out = app.output
    out.table(
        "Memory pools",
        [
            "POOL",
            "KIND",
            "NAME",
            "TOTAL",
            "USED",
            "AVAILABLE",
            "USED %",
            "LIMIT FROM",
            "PSI SOME/FULL",
            "PROCESSES",
        ],
        [
            (
                pool.id,
                pool.kind,
                pool.name,
                format_bytes(pool.total_bytes),
                format_bytes(pool.used_bytes),
                format_bytes(pool.available_bytes),
                f"{pool.used_fraction * 100:.1f}",
                pool.limit_source or pool.gpu_limit_source,
                _psi(pool),
                len(pool.processes) if pool.processes else None,
            )
            for pool in snapshot.pools
        ],
    )
    if not snapshot.pools:
        out.line("No memory pools: every device plugin is disabled, unavailable or failed.")
    for pool in snapshot.pools:
        notes = []
        if pool.gpu_limit_bytes is not None:
            notes.append(f"GPU may use {format_bytes(pool.gpu_limit_bytes)}")
        if pool.os_pressure is not None:
            notes.append(f"OS pressure {pool.os_pressure}")
        if pool.oom_kills:
            notes.append(f"{pool.oom_kills} OOM kills")
        if pool.swap_total_bytes:
            used, total = pool.swap_used_bytes, pool.swap_total_bytes
            notes.append(f"swap {format_bytes(used)} of {format_bytes(total)}")
        if notes:
            out.line(f"  {pool.id}: " + ", ".join(notes))
    if snapshot.unavailable:
        out.line()
        out.line("Unavailable:")
        for missing in snapshot.unavailable:
            out.line(f"  {missing.source}: {missing.reason}")


def register(cli: click.Group) -> None:
    cli.add_command(device)
