"""The ``memwarden`` command line.

Exit codes: 0 success; 1 a runtime failure (a provider error, a failed action); 2 bad usage or an
invalid configuration; 3 refused because it would not fit in memory.

Each command lives in a module of this package, named in ``COMMANDS`` and imported only when that
command runs (or ``--help`` lists them all), so `memwarden status` does not import the governor's
live view; plugins add theirs through the ``register_commands`` hook.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from memwarden.cli.output import Output
from memwarden.core.errors import MemwardenError
from memwarden.core.warden import Warden

# Command name -> the module whose register(cli) adds it (some modules add several).
COMMANDS = {
    "status": "memwarden.cli.status",
    "plugins": "memwarden.cli.plugins",
    "config": "memwarden.cli.config",
    "device": "memwarden.cli.device",
    "models": "memwarden.cli.models",
    "load": "memwarden.cli.models",
    "unload": "memwarden.cli.models",
    "generate": "memwarden.cli.models",
    "plan": "memwarden.cli.plan",
    "watch": "memwarden.cli.watch",
    "estimate": "memwarden.cli.estimate",
    "fit": "memwarden.cli.estimate",
    "history": "memwarden.cli.history",
    "report": "memwarden.cli.history",
    "recommend": "memwarden.cli.history",
    "pick": "memwarden.cli.pick",
    "fleet": "memwarden.cli.fleet",
    "serve": "memwarden.cli.serve",
    "context": "memwarden.cli.context",
}
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


class AppContext:
    """Built lazily so that `memwarden config check` works when the default config is broken."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self.output = Output()
        self._warden: Warden | None = None

    @property
    def warden(self) -> Warden:
        if self._warden is None:
            self._warden = Warden.from_config(self.config_path)
        return self._warden


class MemwardenGroup(click.Group):
    """Adds plugin commands before resolving a subcommand, and turns memwarden errors into a
    clear message and the documented exit code instead of a traceback."""

    _plugin_commands_added = False
    _registered_modules: set[str] = set()

    def _add_builtin(self, module: str) -> None:
        if module not in self._registered_modules:
            self._registered_modules.add(module)
            importlib.import_module(module).register(self)

    def _add_plugin_commands(self, ctx: click.Context) -> None:
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        # click resolves the subcommand before it runs the group's callback.
        if not isinstance(ctx.obj, AppContext):
            ctx.obj = AppContext(ctx.params.get("config_path"))
        # A broken config must still let `config check` and `--help` run; the command that
        # needs the warden reports the error itself.
        with contextlib.suppress(MemwardenError):
            ctx.obj.warden.hook.register_commands(cli=self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            self._add_builtin(COMMANDS[cmd_name])
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._add_plugin_commands(ctx)
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in COMMAND_MODULES:
            self._add_builtin(module)
        self._add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MemwardenError as exc:
            app = ctx.obj if isinstance(ctx.obj, AppContext) else None
            if app is not None and app.output.json:
                app.output.json_error(exc)
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        finally:
            _commit_history()


def _commit_history() -> None:
    """A command's history is committed before it returns (not only at interpreter exit)."""
    state = sys.modules.get("memwarden.plugins.sqlite_state")
    if state is not None:
        state.close_all()


@click.group(cls=MemwardenGroup)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file (default: $MEMWARDEN_CONFIG, ./memwarden.toml, then the user config dir).",
)
@click.version_option(package_name="memwarden")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Keep locally run LLMs inside the memory this machine really has."""
    if not isinstance(ctx.obj, AppContext):
        ctx.obj = AppContext(config_path)


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: machine-readable output on stdout, errors included."""

    def remember(ctx: click.Context, _: click.Parameter, value: bool) -> bool:
        app = ctx.find_object(AppContext)
        if app is not None:
            app.output.json = value
        return value

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        is_eager=True,
        callback=remember,
        help="Print JSON for scripts instead of a table.",
    )(command)


pass_app = click.make_pass_decorator(AppContext)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="memwarden: %(levelname)s: %(message)s")
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="memwarden")
