"""`memwarden serve`: the governor and the HTTP front door in one process (docs/serve.md)."""

from __future__ import annotations

import click

from memwarden.cli import AppContext, pass_app


@click.command()
@click.option(
    "--host", default=None, help="Address to listen on (default: [serve] host, 127.0.0.1)."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port (default: [serve] port, 11435).",
)
@click.option("--no-psi", is_flag=True, help="Do not arm the Linux PSI trigger; sample on a timer.")
@pass_app
def serve(app: AppContext, host: str | None, port: int | None, no_psi: bool) -> None:
    """Run the governor and an OpenAI/Ollama-compatible proxy that admits every request.

    Beyond loopback it refuses to start without a token ([serve] token or $MEMWARDEN_TOKEN);
    with a token, every state-changing request needs `Authorization: Bearer <token>`.
    """
    from memwarden.serve.app import FrontDoor, configured_token

    warden = app.warden
    settings = warden.config.serve
    door = FrontDoor(
        warden,
        host=host or settings.host,
        port=settings.port if port is None else port,
        token=configured_token(warden),
        psi=False if no_psi else None,
        announce=True,
    )
    click.echo(f"memwarden serve: listening on http://{door.host}:{door.server.config.port}")
    door.run()


def register(cli: click.Group) -> None:
    cli.add_command(serve)
