"""Click parameter types shared by commands: values a command line may hold, checked where they
are parsed so that a bad one is a usage error (exit 2) naming the option."""

from __future__ import annotations

import math
from typing import Any

import click


class Seconds(click.ParamType):
    """A positive, finite number of seconds, at most ``maximum``: "nan", "inf", "0" and "-1"
    are usage errors, where click's FloatRange lets NaN through."""

    name = "seconds"

    def __init__(self, maximum: float = 366 * 24 * 3600) -> None:
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The value as a float, or fail with a message that says what is allowed."""
        if isinstance(value, float) and math.isfinite(value) and 0 < value <= self.maximum:
            return value
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or not 0 < seconds <= self.maximum:
            self.fail(
                f"{value!r} is not a number of seconds between 0 (excluded) and "
                f"{self.maximum:,.0f}",
                param,
                ctx,
            )
        return seconds
