"""`memwarden config show` and `memwarden config check FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.core.config import find_config, load_config, parse_config_file
from memwarden.core.errors import ConfigError


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
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@pass_app
def check(app: AppContext, file: Path, as_json: bool) -> None:
    """Validate FILE; exit 2 with the file, key and expectation when it is wrong."""
    if not file.is_file():
        raise ConfigError(f"{file}: no such file", hint="give the path of a memwarden.toml")
    parse_config_file(file)
    if as_json:
        app.output.emit_json({"file": str(file), "valid": True})
    else:
        app.output.line(f"{file}: valid")


def register(cli: click.Group) -> None:
    cli.add_command(config)
