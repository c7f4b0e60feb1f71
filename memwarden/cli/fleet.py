"""`memwarden fleet`: this host as a node of a Ray fleet (docs/fleet.md).

``node-args`` prints the ``ray start`` arguments that declare what LLMs may take here (the
resources :func:`memwarden.core.admission.node_resources` computes from the device and the
config); ``start-node`` runs ``ray start`` with them and starts the node's agent; ``status``
shows every node's agent report from the head.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import click

from memwarden.cli import AppContext, json_option, pass_app
from memwarden.cli.output import format_bytes
from memwarden.core.admission import node_resources
from memwarden.core.errors import ProviderError


def node_args(app: AppContext, address: str | None) -> list[str]:
    """The ``ray start`` arguments for this host: its LLM resources, and where the head is
    (``--head`` when no address is given)."""
    warden = app.warden
    resources = node_resources(warden.snapshot(), warden.config)
    args = ["--address", address] if address else ["--head"]
    return [*args, "--resources", json.dumps(resources, sort_keys=True)]


@click.group()
def fleet() -> None:
    """This host as a node of a Ray fleet: its resources, starting it, the fleet's status."""


@fleet.command("node-args")
@click.option("--address", help="The head's address (host:6379); omit on the head itself.")
@json_option
@pass_app
def node_args_command(app: AppContext, address: str | None, as_json: bool) -> None:
    """Print the `ray start` arguments that declare what LLMs may take on this host."""
    args = node_args(app, address)
    if as_json:
        resources = json.loads(args[-1])
        app.output.emit_json({"args": args, "resources": resources})
        return
    click.echo(shlex.join(["ray", "start", *args]))
    for name, value in sorted(json.loads(args[-1]).items()):
        click.echo(f"# {name}: {format_bytes(value)}", err=True)


@fleet.command("start-node")
@click.option("--address", help="The head's address (host:6379); omit on the head itself.")
@click.option(
    "--agent-interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between the node agent's governor rounds.",
)
@pass_app
def start_node(app: AppContext, address: str | None, agent_interval: float) -> None:
    """Run `ray start` with this host's LLM resources, then start its memwarden agent."""
    args = node_args(app, address)
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", *args]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise ProviderError(
            f"fleet: `ray start` failed with exit status {completed.returncode}",
            hint="run the printed `memwarden fleet node-args` command by hand to see why",
        )
    import ray

    from memwarden.plugins.ray_provider import NAMESPACE, start_agent

    ray.init(address="auto", namespace=NAMESPACE, log_to_driver=False)
    try:
        node_id = ray.get_runtime_context().get_node_id()
        start_agent(node_id, dict(app.warden.config.raw or {}), agent_interval)
        click.echo(f"node {node_id}: agent started")
    finally:
        ray.shutdown()


@fleet.command("status")
@json_option
@pass_app
def fleet_status(app: AppContext, as_json: bool) -> None:
    """Every node of the fleet: its LLM resources, pressure level and models (from the head)."""
    from memwarden.plugins.ray_provider import RayProvider

    provider = app.warden.providers().get("ray")
    if not isinstance(provider, RayProvider):
        raise ProviderError(
            "fleet: the ray provider is not configured",
            hint="set [plugins.ray] address in the config",
        )
    reports = provider.fleet_status()
    if as_json:
        app.output.emit_json({"nodes": reports})
        return
    app.output.table(
        "Fleet nodes",
        ["NODE", "ADDRESS", "LEVEL", "RESOURCES", "MODELS"],
        [
            (
                r["node_id"][:12],
                r.get("address"),
                r.get("level", r.get("agent")),
                ", ".join(f"{k}={format_bytes(v)}" for k, v in sorted(r["resources"].items())),
                ", ".join(m["name"] for m in r.get("models", [])),
            )
            for r in reports
        ],
    )


def register(cli: click.Group) -> None:
    cli.add_command(fleet)
