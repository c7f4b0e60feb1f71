"""Readable tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from memwarden.core.errors import MemwardenError
from memwarden.core.serialize import to_data
from memwarden.core.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Output", "format_bytes"]


class Output:
    def __init__(self) -> None:
        self.json = False
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        """Built on first use: rich is imported only by commands that print for people, not by
        ``--json`` (a fifth of `memwarden status`'s start-up otherwise)."""
        if self._console is None:
            from rich.console import Console

            # Piped output is read by grep and people alike: never fold a table to 80 columns.
            width = None if sys.stdout.isatty() else 240
            # Model names and reasons are data, never rich markup or emoji codes (":1234:").
            self._console = Console(
                soft_wrap=True, highlight=False, width=width, emoji=False, markup=False
            )
        return self._console

    def emit_json(self, data: Any) -> None:
        click.echo(json.dumps(to_data(data), indent=2, default=str))

    def json_error(self, exc: MemwardenError) -> None:
        click.echo(json.dumps({"error": exc.to_dict()}, indent=2))

    def table(
        self, title: str | None, headers: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in rows:
            table.add_row(*(Text("-" if cell is None else str(cell)) for cell in row))
        self.console.print(table)

    def line(self, text: str = "") -> None:
        self.console.print(text, markup=False)

    def warn(self, text: str) -> None:
        click.echo(text, err=True, file=sys.stderr)
