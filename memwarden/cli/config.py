"""`memwarden config show` and `memwarden config check FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.core.config import (
    find_config,
    invalid_config,
    load_config,
    parse_config_data,
    plugins_only,
    read_config_file,
)
from memwarden.core.errors import ConfigError
from memwarden.core.plugins import Plugins


@click.group()
def config() -> None:
    """Inspect and validate configuration."""


@config.command()
@json_option
@pass_app
def show(app: AppContext, as_json: bool) -> None:
    """Print the effective configuration and where each value came from."""
    path = find_config(app.config_path)
    effective = load_config(app.config_path)
    rows = list(effective.sources())
    if as_json:
        app.output.emit_json(
            {
                "file": str(path) if path else None,
                "settings": [{"key": k, "value": v, "source": s} for k, v, s in rows],
            }
        )
        return
    app.output.line(f"Config file: {path if path else 'none (all defaults)'}")
    app.output.table(
        None,
        ["KEY", "VALUE", "SOURCE"],
        [(key, json.dumps(value), source) for key, value, source in rows],
    )


@config.command()
@click.argument("file", type=click.Path(path_type=Path))
@json_option
@pass_app
def check(app: AppContext, file: Path, as_json: bool) -> None:
    """Validate FILE; exit 2 with the file, key and expectation when it is wrong.

    Checks what start-up checks, and lists every problem at once: the core sections, the
    plugin lists and each plugin's own ``[plugins.NAME]`` table against the options it
    declares. ``$MEMWARDEN_PLUGINS`` is not consulted: the file is checked on its own."""
    raw = read_config_file(file)
    problems: list[str] = []
    try:
        config = parse_config_data(raw, file)
    except ConfigError as exc:
        if not exc.problems:
            raise
        problems.extend(exc.problems)
        config = plugins_only(raw, file)
    if config is not None:
        problems.extend(Plugins(config, env={}, validate=False).problems)
    if problems:
        raise invalid_config(file, problems)
    if as_json:
        app.output.emit_json({"file": str(file), "valid": True})
    else:
        app.output.line(f"{file}: valid")


def register(cli: click.Group) -> None:
    cli.add_command(config)
