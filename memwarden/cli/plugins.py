"""`memwarden plugins`: what is installed, where it came from, and whether it runs."""

from __future__ import annotations

import click

from memwarden.cli import AppContext, json_option, pass_app


@click.command()
@json_option
@pass_app
def plugins(app: AppContext, as_json: bool) -> None:
    """Installed plugins: name, version, source, hooks and state."""
    warden = app.warden
    # Failures inside hooks only show once hooks have run; a snapshot exercises the device hooks.
    warden.snapshot()
    listing = warden.plugins.plugin_list()
    if as_json:
        app.output.emit_json(listing)
        return
    app.output.table(
        None,
        ["NAME", "VERSION", "SOURCE", "DISTRIBUTION", "HOOKS", "STATE"],
        [
            (
                info.name,
                info.version,
                info.source,
                info.distribution,
                ", ".join(info.hooks),
                info.state + (f" ({info.reason})" if info.reason else ""),
            )
            for info in listing
        ],
    )


def register(cli: click.Group) -> None:
    cli.add_command(plugins)
