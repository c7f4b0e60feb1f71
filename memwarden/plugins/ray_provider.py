"""A fleet of hosts governed through Ray (``pip install 'memwarden[ray]'``; docs/fleet.md).

Disabled unless ``[plugins.ray] address`` says where the cluster is::

    [plugins.ray]
    address = "ray://head:10001"      # or "auto", or "head:6379"
    resource = "llm_ram_bytes"        # the node resource a model's estimate is requested as
    placement_timeout_s = 120         # how long a model may wait for a node that can take it

Three parts, each a Ray actor or a memwarden provider:

- :class:`RayProvider` (provider ``ray``, on the head): loading a model creates a
  :class:`ModelActor` that requests the model's estimate as the node resource
  (``memwarden fleet node-args`` declares it on each node), so Ray places it where it fits;
  ``generate`` is an actor call; ``unload`` kills the actor and Ray returns its resources.
- :class:`ModelActor`: wraps the embedded llama.cpp runtime on its node (one worker process).
- :class:`NodeAgent`: one per node, pinned to it, runs that node's governor over the model
  actors placed there (:class:`NodeProvider`), and reports pools, levels and models.

Ray is imported only when the plugin is used, so `memwarden status` stays fast without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs

from memwarden.core.config import Config, parse_config_data, seconds
from memwarden.core.errors import (
    InsufficientMemory,
    ModelNotFound,
    ProviderError,
    ProviderUnavailable,
)
from memwarden.core.providers import Provider
from memwarden.core.serialize import to_data
from memwarden.core.types import (
    AvailableModel,
    GenerateResult,
    LoadedModel,
    ModelRef,
    PoolKind,
    ProviderStatus,
)
from memwarden.core.units import format_bytes
from memwarden.hookspecs import hookimpl

log = logging.getLogger("memwarden.ray")

NAME = "ray"
NAMESPACE = "memwarden"
AGENT_PREFIX = "memwarden-agent:"
_INSTALL_HINT = "install the extra: pip install 'memwarden[ray]'"
# The node's own providers an agent never runs: models there are the fleet's model actors.
_AGENT_DISABLED = ("ray", "ollama", "lmstudio", "llamacpp", "sqlite-state")


class PlacementPending(InsufficientMemory):
    """No node has room for the model now, though one could take it once models there are
    unloaded: the front door answers 503 with Retry-After (``transient``)."""

    transient = True


@attrs.frozen
class RayOptions:
    """``[plugins.ray]``."""

    # Where the cluster is ("auto", "host:6379" or "ray://host:10001"); None: plugin disabled.
    address: str | None = None
    # The node resource a model's estimate is requested as (NODE_RESOURCE's names).
    resource: str = attrs.field(
        default="llm_ram_bytes",
        validator=attrs.validators.in_(("llm_ram_bytes", "llm_gpu_bytes")),
    )
    # How long a model may wait for a node with room before the load is refused.
    placement_timeout_s: float = seconds(120.0, minimum=0.01, maximum=86_400.0)
    # How long an actor call (generate, a status question) may take.
    call_timeout_s: float = seconds(300.0, minimum=0.01, maximum=86_400.0)
    # [plugins.llamacpp]-style settings for the embedded runtime on every node (models_dir...).
    llamacpp: Mapping[str, Any] = attrs.field(factory=dict)


OPTIONS = RayOptions


def _ray() -> Any:
    """Ray, or ProviderUnavailable saying how to install it."""
    if importlib.util.find_spec("ray") is None:
        raise ProviderUnavailable("ray: Ray is not installed", hint=_INSTALL_HINT)
    import ray

    return ray


def agent_name(node_id: str) -> str:
    """The name of a node's agent actor in the ``memwarden`` namespace."""
    return f"{AGENT_PREFIX}{node_id}"


def _loaded_from(data: Mapping[str, Any]) -> LoadedModel:
    return LoadedModel(**{k: v for k, v in data.items() if k in attrs.fields_dict(LoadedModel)})


# -- the actors ------------------------------------------------------------------------------


class ModelActor:
    """One model on one node: the embedded llama.cpp runtime in a worker process of its own.

    Created by :class:`RayProvider` with the model's estimate as its resource request. The
    actor exists (:meth:`node` answers) once Ray has placed it; :meth:`load` then loads the
    model, so waiting for a node and waiting for a load have timeouts of their own.
    """

    def __init__(
        self,
        model: str,
        context_tokens: int | None,
        options: Mapping[str, Any] | None,
        llamacpp: Mapping[str, Any],
        priority: int | None = None,
    ) -> None:
        import ray

        from memwarden.plugins.llamacpp import LlamaCppOptions, LlamaCppProvider

        self.model = model
        self.context_tokens = context_tokens
        self.options = dict(options or {})
        self.priority = priority
        self.node_id = ray.get_runtime_context().get_node_id()
        self.provider = LlamaCppProvider(LlamaCppOptions(**dict(llamacpp)))
        self.loaded_model: LoadedModel | None = None

    def node(self) -> str:
        """The node the actor was placed on (answers as soon as it is placed)."""
        return self.node_id

    def load(self) -> dict[str, Any]:
        """Load the model on this node and announce it to the node's agent."""
        import ray

        self.loaded_model = self.provider.load(
            self.model, context_tokens=self.context_tokens, options=self.options
        )
        with contextlib.suppress(ValueError):
            agent = ray.get_actor(agent_name(self.node_id), namespace=NAMESPACE)
            me = ray.get_runtime_context().current_actor
            ray.get(agent.adopt.remote(self.loaded_model.name, me, self.priority))
        return self.ready()

    def ready(self) -> dict[str, Any]:
        """Where the model runs and what it holds (``node_id`` and a LoadedModel's fields)."""
        return {"node_id": self.node_id, **self.loaded()}

    def loaded(self) -> dict[str, Any]:
        """The model as loaded now, its resident size measured."""
        models = self.provider.loaded_models()
        if not models and self.loaded_model is None:
            raise ProviderError(f"ray: {self.model} is not loaded yet")
        return to_data(models[0] if models else self.loaded_model)

    def generate(self, prompt: str, max_tokens: int | None) -> dict[str, Any]:
        """Answer a prompt with the model."""
        return to_data(self.provider.generate(self.model, prompt, max_tokens=max_tokens))

    def stream(self, request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """The model's answers piece by piece (the embedded runtime's ``stream``), as a Ray
        streaming generator."""
        yield from self.provider.stream(self.model, dict(request))

    def stop(self) -> None:
        """End the worker (the actor is killed next)."""
        self.provider.unload_all()


class NodeProvider(Provider):
    """The model actors placed on one node, as that node's governor sees them: ``unload``
    kills the actor, so Ray returns its resources and the model's memory is freed."""

    name = "fleet-node"

    def __init__(self, call_timeout_s: float = 30.0) -> None:
        self.call_timeout_s = call_timeout_s
        self.actors: dict[str, Any] = {}
        self.evicted: list[str] = []
        self._lock = threading.Lock()

    def status(self) -> ProviderStatus:
        return ProviderStatus(name=self.name, reachable=True)

    def available_models(self) -> list[AvailableModel]:
        return []

    def loaded_models(self) -> list[LoadedModel]:
        import ray

        with self._lock:
            actors = dict(self.actors)
        models = []
        for name, actor in actors.items():
            try:
                data = ray.get(actor.loaded.remote(), timeout=self.call_timeout_s)
            except Exception:  # the actor died or hangs: it holds nothing we can evict
                with self._lock:
                    self.actors.pop(name, None)
                continue
            models.append(attrs.evolve(_loaded_from(data), provider=self.name))
        return models

    def load(
        self,
        model: str,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> LoadedModel:
        raise ProviderError(
            f"fleet-node: models are placed by the head's ray provider, not loaded by a node "
            f"({model!r})",
            hint="load it through the head: memwarden load with [plugins.ray] configured",
        )

    def unload(self, model: str) -> None:
        import ray

        with self._lock:
            actor = self.actors.pop(model, None)
        if actor is None:
            raise ModelNotFound(f"fleet-node: {model!r} is not placed on this node")
        with contextlib.suppress(Exception):
            ray.get(actor.stop.remote(), timeout=self.call_timeout_s)
        ray.kill(actor)
        self.evicted.append(model)


class NodeAgent:
    """A node's governor (Governor + Monitor over :class:`NodeProvider`), pinned to the node.

    ``config`` is the node's memwarden configuration as a TOML-like mapping (its pressure
    thresholds, model policies and cap); the node's own runtimes are disabled in it, as the
    models there are the fleet's model actors. ``interval_s`` runs the governor on a thread;
    ``None`` leaves it to :meth:`tick` (tests).
    """

    def __init__(self, config: Mapping[str, Any], interval_s: float | None = 2.0) -> None:
        import ray

        from memwarden.core.plugins import Plugins
        from memwarden.core.warden import Warden

        raw = {key: value for key, value in dict(config).items() if key != "plugins"}
        plugins_raw = dict(config.get("plugins", {}))
        plugins_raw.pop("ray", None)
        disabled = set(plugins_raw.get("disabled", ())) | set(_AGENT_DISABLED)
        plugins_raw["disabled"] = sorted(disabled)
        raw["plugins"] = plugins_raw
        parsed: Config = parse_config_data(raw, None)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.provider = NodeProvider()
        plugins = Plugins(parsed, load_entry_points=False)
        plugins.register(_NodePlugin(self.provider))
        self.warden = Warden(parsed, plugins)
        self.governor = self.warden.governor
        self.actions: list[dict[str, Any]] = []
        self._stop = threading.Event()
        if interval_s is not None:
            thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
            thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.tick()
            except Exception:  # keep governing; the next round samples again
                log.exception("node agent %s: a governor round failed", self.node_id)

    def adopt(self, model: str, actor: Any, priority: int | None) -> None:
        """A model actor placed on this node announces itself."""
        with self.provider._lock:
            self.provider.actors[model] = actor
        if priority is not None:
            with contextlib.suppress(Exception):
                loaded = LoadedModel(name=model, provider=self.provider.name, total_bytes=0)
                self.governor.set_priority(loaded, priority)

    def tick(self) -> dict[str, Any]:
        """One governor round: sample the node and, above NORMAL, run the ladder."""
        report = self.governor.step()
        if report is not None:
            for outcome in report.outcomes:
                self.actions.append(to_data(outcome))
        return self.report()

    def report(self) -> dict[str, Any]:
        """The node's pools, pressure level and models, for the head."""
        reading = self.governor.sample()
        return {
            "node_id": self.node_id,
            "level": reading.level.name,
            "pools": [to_data(p) for p in reading.pools],
            "models": [to_data(m) for m in self.provider.loaded_models()],
            "evicted": list(self.provider.evicted),
        }

    def shutdown(self) -> None:
        """Stop the governor thread."""
        self._stop.set()


class _NodePlugin:
    """Registers a node's :class:`NodeProvider` with the agent's warden."""

    def __init__(self, provider: NodeProvider) -> None:
        self.provider = provider
        self.__name__ = "fleet-node"

    @hookimpl
    def register_providers(self, register: Callable[[Provider], None], config: Config) -> None:
        register(self.provider)


def start_agent(node_id: str, config: Mapping[str, Any], interval_s: float | None = 2.0) -> Any:
    """Start (or find) the agent of ``node_id``, pinned to that node; returns its handle."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = agent_name(node_id)
    with contextlib.suppress(ValueError):
        return ray.get_actor(name, namespace=NAMESPACE)
    actor_class = ray.remote(NodeAgent)
    agent = actor_class.options(
        name=name,
        namespace=NAMESPACE,
        num_cpus=0,
        max_concurrency=4,
        lifetime="detached",
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(dict(config), interval_s)
    ray.get(agent.report.remote())
    return agent


# -- the provider on the head ----------------------------------------------------------------


@attrs.define
class _Placed:
    model: str
    actor: Any
    node_id: str
    loaded: LoadedModel
    requested_bytes: int
    lost: bool = False


class RayProvider(Provider):
    """Models placed on the fleet's nodes by Ray, each in a :class:`ModelActor`."""

    name = NAME

    def __init__(self, options: RayOptions, config: Config | None = None) -> None:
        self.options = options
        self.config = config if config is not None else parse_config_data({}, None)
        self._placed: dict[str, _Placed] = {}
        self._lost: dict[str, str] = {}  # model -> node it was lost with
        self._lock = threading.Lock()
        self._actor_class: Any = None

    # -- cluster --------------------------------------------------------------------------

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.options.address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    ignore_reinit_error=True,
                )
            except Exception as exc:
                raise ProviderUnavailable(
                    f"ray: cannot join the cluster at {self.options.address!r}: {exc}",
                    hint="start the head with `ray start --head` and check [plugins.ray] address",
                ) from None
        return ray

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's live nodes: id, address and the LLM resources each declares."""
        ray = self._connect()
        return [
            {
                "node_id": node["NodeID"],
                "address": node.get("NodeManagerAddress"),
                "resources": {
                    key: int(value)
                    for key, value in node.get("Resources", {}).items()
                    if key.startswith("llm_")
                },
            }
            for node in ray.nodes()
            if node.get("Alive")
        ]

    def fleet_status(self) -> list[dict[str, Any]]:
        """Every node's agent report (pools, level, models); a node without an agent says so."""
        ray = self._connect()
        reports = []
        for node in self.nodes():
            try:
                agent = ray.get_actor(agent_name(node["node_id"]), namespace=NAMESPACE)
                report = ray.get(agent.report.remote(), timeout=self.options.call_timeout_s)
            except Exception as exc:
                report = {"node_id": node["node_id"], "agent": f"unavailable ({exc})"}
            reports.append({**node, **report})
        return reports

    # -- Provider -------------------------------------------------------------------------

    def status(self) -> ProviderStatus:
        try:
            ray = self._connect()
            version = ray.__version__
        except ProviderUnavailable as exc:
            return ProviderStatus(name=self.name, reachable=False, reason=str(exc))
        return ProviderStatus(name=self.name, reachable=True, version=version)

    def available_models(self) -> list[AvailableModel]:
        from memwarden.plugins.llamacpp import LlamaCppOptions, LlamaCppProvider

        local = LlamaCppProvider(LlamaCppOptions(**dict(self.options.llamacpp)))
        return [attrs.evolve(m, provider=self.name) for m in local.available_models()]

    def loaded_models(self) -> list[LoadedModel]:
        self._check_placed()
        with self._lock:
            return [p.loaded for p in self._placed.values()]

    def lost_models(self) -> dict[str, str]:
        """Models whose node was lost since they were last placed: model -> node id."""
        self._check_placed()
        with self._lock:
            return dict(self._lost)

    def _check_placed(self) -> None:
        """Drop the models whose actor ended: evicted by their node's agent, or lost with it."""
        ray = self._connect()
        with self._lock:
            placed = list(self._placed.values())
        alive = {node["node_id"] for node in self.nodes()} if placed else set()
        for entry in placed:
            if entry.node_id not in alive:
                self._mark_lost(entry)
                continue
            try:
                ray.get(entry.actor.loaded.remote(), timeout=self.options.call_timeout_s)
            except Exception:
                with self._lock:
                    self._placed.pop(entry.model, None)

    def _mark_lost(self, entry: _Placed) -> None:
        with self._lock:
            self._placed.pop(entry.model, None)
            self._lost[entry.model] = entry.node_id
        log.warning("ray: %s was lost with node %s", entry.model, entry.node_id)

    def estimate_bytes(self, model: str, context_tokens: int, options: Mapping[str, Any]) -> int:
        """The model's estimate from its GGUF header, in the figure admission budgets the
        resource's pool kind with (resident in system RAM, committed in GPU memory): what the
        model actor requests from Ray."""
        from memwarden.core.admission import estimate_bytes
        from memwarden.plugins.gguf_estimator import estimate_file
        from memwarden.plugins.llamacpp import LlamaCppOptions, LlamaCppProvider

        local = LlamaCppProvider(LlamaCppOptions(**dict(self.options.llamacpp)))
        name, path = local._find(model)
        estimate = estimate_file(
            ModelRef(name=name, path=str(path)), path, context_tokens, dict(options)
        )
        kind = PoolKind.SYSTEM if self.options.resource == "llm_ram_bytes" else PoolKind.GPU
        return estimate_bytes(estimate, kind, self.config)

    def load(
        self,
        model: str,
        *,
        context_tokens: int | None = None,
        keep_alive_s: float | None = None,
        options: Mapping[str, Any] | None = None,
        priority: int | None = None,
    ) -> LoadedModel:
        """Place ``model`` on a node that can take its estimate, and load it there."""
        ray = self._connect()
        context = context_tokens or int(self.options.llamacpp.get("default_context_tokens", 2048))
        requested = self.estimate_bytes(model, context, options or {})
        resource = self.options.resource
        largest = max((n["resources"].get(resource, 0) for n in self.nodes()), default=0)
        if requested > largest:
            raise InsufficientMemory(
                f"ray: {model} at {context} tokens needs {format_bytes(requested)} of "
                f"{resource}; the largest node declares {format_bytes(largest)}",
                hint="load it with a shorter context, or add a node that can take it "
                "(memwarden fleet node-args)",
            )
        with self._lock:
            current = self._placed.get(model)
        if current is not None:
            if current.loaded.context_tokens == context:
                return current.loaded
            self.unload(model)
        if self._actor_class is None:
            self._actor_class = ray.remote(ModelActor)
        actor = self._actor_class.options(
            num_cpus=0, resources={resource: requested}, max_concurrency=4
        ).remote(model, context, dict(options or {}), dict(self.options.llamacpp), priority)
        placed_ref = actor.node.remote()
        done, _ = ray.wait([placed_ref], timeout=self.options.placement_timeout_s)
        if not done:
            ray.kill(actor)
            raise PlacementPending(
                f"ray: no node took {model} ({format_bytes(requested)} of {resource}) within "
                f"{self.options.placement_timeout_s:g} s; the largest node declares "
                f"{format_bytes(largest)}",
                hint="unload a model on the fleet, or add a node (memwarden fleet node-args)",
            )
        try:
            data = ray.get(actor.load.remote(), timeout=self.options.call_timeout_s)
        except Exception as exc:
            with contextlib.suppress(Exception):
                ray.kill(actor)
            raise ProviderError(
                f"ray: loading {model} on its node failed: {exc}",
                hint="see the node's log (ray logs); the model file must exist on every node",
            ) from None
        loaded = attrs.evolve(_loaded_from(data), provider=self.name)
        with self._lock:
            self._placed[model] = _Placed(model, actor, data["node_id"], loaded, requested)
            self._lost.pop(model, None)
        return loaded

    def node_of(self, model: str) -> str | None:
        """The node a model is placed on, or None."""
        with self._lock:
            entry = self._placed.get(model)
        return entry.node_id if entry is not None else None

    def unload(self, model: str) -> None:
        ray = self._connect()
        with self._lock:
            entry = self._placed.pop(model, None)
        if entry is None:
            raise ModelNotFound(f"ray: {model!r} is not placed on the fleet")
        with contextlib.suppress(Exception):
            ray.get(entry.actor.stop.remote(), timeout=self.options.call_timeout_s)
        ray.kill(entry.actor)

    def generate(self, model: str, prompt: str, *, max_tokens: int | None = None) -> GenerateResult:
        """Answer with the model on its node; a model not placed (or lost) is placed first."""
        ray = self._connect()
        with self._lock:
            entry = self._placed.get(model)
        if entry is None:
            self.load(model)
            with self._lock:
                entry = self._placed[model]
        try:
            data = ray.get(
                entry.actor.generate.remote(prompt, max_tokens),
                timeout=self.options.call_timeout_s,
            )
        except Exception as exc:
            if entry.node_id not in self._alive_after_actor_died(exc, entry.node_id):
                self._mark_lost(entry)
                raise ProviderUnavailable(
                    f"ray: {model} was lost with node {entry.node_id} during the request",
                    hint="send the request again: the next one places the model on another node",
                ) from None
            with self._lock:
                self._placed.pop(model, None)
            raise ProviderError(
                f"ray: {model} on node {entry.node_id} failed: {exc}",
                hint="send the request again: the next one loads the model again",
            ) from None
        return attrs.evolve(GenerateResult(**data), provider=self.name)

    def _alive_after_actor_died(
        self, exc: BaseException, node_id: str, wait_s: float = 15.0
    ) -> set[str]:
        """The live nodes, once the cluster has had time to notice a node lost with an actor
        (its health checks take a few seconds): when an actor died, its node ``node_id`` is
        watched for up to ``wait_s`` to see whether it died too."""
        ray = _ray()
        alive = {node["node_id"] for node in self.nodes()}
        # The model's own error (a RayTaskError) says nothing about its node; a dead actor or a
        # result lost with its node does.
        if isinstance(exc, ray.exceptions.RayTaskError) or not isinstance(
            exc, ray.exceptions.RayError
        ):
            return alive
        deadline = time.monotonic() + wait_s
        while node_id in alive and time.monotonic() < deadline:
            time.sleep(0.5)
            alive = {node["node_id"] for node in self.nodes()}
        return alive

    def stream(self, model: str, request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Stream a completion from the model on its node (``memwarden serve`` serves the
        fleet's models with it): the answers of the embedded runtime's ``stream``, passed on
        as the node yields them. A model not placed (or lost) is placed first."""
        ray = self._connect()
        with self._lock:
            entry = self._placed.get(model)
        if entry is None:
            self.load(model)
            with self._lock:
                entry = self._placed[model]
        answers = entry.actor.stream.options(num_returns="streaming").remote(dict(request))
        try:
            for ref in answers:
                yield ray.get(ref, timeout=self.options.call_timeout_s)
        except ray.exceptions.RayError as exc:
            if entry.node_id not in self._alive_after_actor_died(exc, entry.node_id):
                self._mark_lost(entry)
                raise ProviderUnavailable(
                    f"ray: {model} was lost with node {entry.node_id} during the request",
                    hint="send the request again: the next one places the model on another node",
                ) from None
            raise ProviderError(
                f"ray: {model} on node {entry.node_id} failed: {exc}",
                hint="send the request again",
            ) from None

    def unload_all(self) -> None:
        """Kill every model actor this provider placed (the head is shutting down)."""
        with self._lock:
            models = list(self._placed)
        for model in models:
            with contextlib.suppress(Exception):
                self.unload(model)


@hookimpl
def register_providers(register: Callable[[Provider], None], config: Config) -> None:
    options = config.plugin_options(NAME, RayOptions)
    if options.address is not None:
        register(RayProvider(options, config))
