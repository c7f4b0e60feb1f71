"""A well-behaved third-party plugin: one extra memory pool and one CLI command."""

import click

from memwarden import hookimpl
from memwarden.core.types import MemoryPool, PoolKind


@hookimpl
def detect_device(config):
    size = int(config.plugin_settings("example").get("total_bytes", 1024**3))
    return [
        MemoryPool(
            id="example:0",
            kind=PoolKind.GPU,
            name="Example accelerator",
            total_bytes=size,
            available_bytes=size // 2,
            used_bytes=size // 2,
            source="example",
        )
    ]


@hookimpl
def register_commands(cli):
    @cli.command(name="example-hello")
    def hello():
        """Say hello from a plugin."""
        click.echo("hello from memwarden-example")
