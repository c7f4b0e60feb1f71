"""`memwarden status`: pools, pressure, providers and loaded models at a glance."""

from __future__ import annotations

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes


@click.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Memory pools, pressure level, reachable providers and their loaded models."""
    warden = app.warden
    snapshot = warden.snapshot()
    providers = warden.provider_statuses()
    from memwarden.serve.daemon import for_command

    # While `memwarden serve` runs, its governor sees every model (embedded ones included).
    daemon = for_command(warden.config.serve.token)
    if daemon is not None:
        loaded = daemon.loaded_models()
    else:
        loaded = warden.loaded_models() if any(p.reachable for p in providers) else []
    reading = warden.pressure(snapshot, managed_bytes=sum(m.total_bytes for m in loaded))
    failures = warden.plugin_failures

    if as_json:
        app.output.emit_json(
            {
                "pressure": reading.level,
                "pressure_reasons": reading.reasons,
                "pools": snapshot.pools,
                "pool_pressure": reading.pools,
                "devices_unavailable": snapshot.unavailable,
                "providers": providers,
                "loaded_models": loaded,
                "plugin_failures": failures,
                "daemon": daemon.url if daemon is not None else None,
            }
        )
        return

    out = app.output
    levels = {p.pool_id: p.level for p in reading.pools}
    out.table(
        "Memory pools",
        ["POOL", "NAME", "TOTAL", "USED", "AVAILABLE", "USED %", "LEVEL", "LIMIT FROM"],
        [
            (
                pool.id,
                pool.name,
                format_bytes(pool.total_bytes),
                format_bytes(pool.used_bytes),
                format_bytes(pool.available_bytes),
                f"{pool.used_fraction * 100:.1f}",
                levels.get(pool.id),
                pool.limit_source,
            )
            for pool in snapshot.pools
        ],
    )
    if not snapshot.pools:
        out.line("No memory pools: every device plugin is disabled or failed.")
    for missing in snapshot.unavailable:
        out.line(f"  {missing.source}: unavailable ({missing.reason})")
    out.line()
    out.line(f"Pressure: {reading.level}")
    if daemon is not None:
        out.line(f"  memwarden serve runs at {daemon.url}; its governor manages the models")
    for reason in reading.reasons:
        out.line(f"  {reason}")
    out.line()
    reachable = [p for p in providers if p.reachable]
    if not providers:
        out.line("Providers: none reachable (no provider plugin is registered)")
    elif not reachable:
        out.line("Providers: none reachable")
    else:
        out.line("Providers: " + ", ".join(p.name for p in reachable))
    for provider in providers:
        if not provider.reachable:
            # It answered (it has a version) but cannot list its models: failing, not down.
            state = "failing" if provider.version else "unreachable"
            out.line(f"  {provider.name}: {state} ({provider.reason})")
    if loaded:
        out.line()
        out.table(
            "Loaded models",
            ["PROVIDER", "MODEL", "SIZE", "ON GPU", "CONTEXT", "IN FLIGHT"],
            [
                (
                    m.provider,
                    m.name,
                    format_bytes(m.total_bytes),
                    format_bytes(m.gpu_bytes),
                    m.context_tokens,
                    m.requests_in_flight,
                )
                for m in loaded
            ],
        )
    if failures:
        out.line()
        out.line("Plugin failures (isolated; everything else kept working):")
        for failure in failures:
            where = f"in {failure.hook}" if failure.hook else "while loading"
            dist = f" from {failure.distribution}" if failure.distribution else ""
            out.line(f"  {failure.plugin}{dist} failed {where}: {failure.error}")


def register(cli: click.Group) -> None:
    cli.add_command(status)
