"""The whole plugin contract of memwarden, one function per extension point.

A plugin is a module or object with functions marked ``@hookimpl`` whose names match the
functions below. Argument names matter, order does not; a plugin may accept fewer arguments than
the spec lists. Every hook is called through memwarden's plugin manager, which isolates failures:
a plugin that raises is reported by name (``memwarden plugins``, and once per hook as a
``plugin-failed`` event) and treated as if it had returned None, so every other plugin keeps
working. A :class:`~memwarden.core.errors.MemwardenError` it raises is a deliberate answer and
reaches the caller.

Types are in :mod:`memwarden.core.types`, and ``import memwarden`` re-exports them with
``hookimpl``, ``Provider``, ``Config``, the errors and ``to_data``. ``docs/plugins.md`` has a
working example of each hook; ``docs/internals.md`` says which attributes of the objects passed to
hooks are stable."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from memwarden.context.window import CompressionContext
    from memwarden.core.config import Config
    from memwarden.core.picking import PickContext
    from memwarden.core.providers import Provider
    from memwarden.core.strategy import StrategyContext
    from memwarden.core.types import (
        Action,
        AvailableModel,
        ContextWindow,
        DeviceUnavailable,
        Event,
        MemoryEstimate,
        MemoryPool,
        ModelChoice,
        ModelRef,
        ModelRequest,
        PressureReading,
    )
    from memwarden.core.warden import Warden

PROJECT_NAME = "memwarden"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: The record kinds the core hands to ``persist_state`` (and ``read_state`` gives back), each with
#: its type: "event" an :class:`~memwarden.core.types.Event` (every event the warden emits),
#: "reading" a :class:`~memwarden.core.types.PressureReading` (each time the pressure level
#: changes), "usage" a :class:`~memwarden.core.types.UsageRecord` (each call made through
#: ``Warden.generate``), "action" an :class:`~memwarden.core.types.ActionRecord` (each action the
#: governor takes or tries, with its measured effect), "sample" a
#: :class:`~memwarden.core.types.MemorySample` (every reading the governor takes: the memory
#: history). ``memwarden.core.serialize.RECORD_TYPES`` maps each kind to its class.
PERSISTED_KINDS: tuple[str, ...] = ("event", "reading", "usage", "action", "sample")


@hookspec
def detect_device(config: Config) -> Sequence[MemoryPool] | DeviceUnavailable | None:
    """Report the memory pools this plugin can see, right now.

    Called for every snapshot: by ``memwarden status`` and ``memwarden device``, and by the
    monitor on every sample (up to ten times a second under pressure), so it must be cheap:
    initialise libraries once, not per call.

    :param config: the effective configuration; read your own section with
        ``config.plugin_settings("<your plugin name>")``.
    :return: the pools you measured (system RAM, each GPU, a unified pool); a
        ``DeviceUnavailable`` naming why you see nothing (no driver, not this OS); or None when
        the question does not concern you. Every plugin contributes; the snapshot holds all pools.
        Two plugins must not report the same pool ``id``.
    """


@hookspec(firstresult=True)
def estimate_model_size(
    model: ModelRef, context_tokens: int, options: dict[str, Any], config: Config
) -> MemoryEstimate | None:
    """Estimate the memory a model takes when loaded with a given context length.

    Called by ``memwarden estimate`` and ``fit``, and by the governor before it loads a model or
    plans evictions.

    :param model: the model as the user named it (provider model name and/or file path).
    :param context_tokens: context length per sequence, in tokens.
    :param options: runtime options that change the answer, all optional: ``kv_type`` ("f16",
        "q8_0", "q4_0", ...), ``parallel`` (sequences), ``batch_tokens``, ``gpu_layers``,
        ``pool_id``, ``metadata`` (a provider's model info when the file is not reachable).
        docs/estimation.md lists every key.
    :param config: the effective configuration (where model stores are, your own section).
    :return: a ``MemoryEstimate`` with its breakdown, or None when you cannot size this model.
        **First result wins.** Precise estimators (reading the model file) mark themselves
        ``tryfirst=True``; heuristics ``trylast=True``.
    """


@hookspec
def on_pressure(reading: PressureReading, context: StrategyContext) -> Iterable[Action] | None:
    """Propose actions that would relieve memory pressure.

    Called by the governor when the pressure level changes to one above NORMAL, again every
    ``retrigger_interval_s`` while it stays there, after each action a ladder round takes (with
    the new reading), and by ``memwarden plan`` for a dry run. Strategies only propose: the core
    checks every proposal, orders them (cheapest that relieves the pressure first), executes one
    at a time, measures again, and stops once pressure is relieved.

    :param reading: the pressure level per pool and overall, with the snapshot behind it.
    :param context: a read-only :class:`memwarden.core.strategy.StrategyContext` for this
        reading: ``loaded_models``, ``policy(model)`` (priority, pinned, critical),
        ``eviction_cost(model)`` / ``eviction_costs(models)``, ``usage(model)``,
        ``requests_in_flight(model)``, ``now`` (the governor's clock), ``sessions``,
        ``refusing_loads``, ``releasable_cache_bytes``, ``estimate(model, context_tokens)`` and
        ``config``.
    :return: ``Action`` proposals (an ``ActionKind`` with the fields that kind needs, the bytes
        it expects to free and its cost), or None. Every strategy contributes (no first result
        wins). Either a list (in any order; the core sorts it and checks it whole), or an
        iterator that yields them cheapest first (by ``cost``): the core reads it only as far
        as it needs (the ladder, up to the first proposal dearer than the cheapest on offer) and
        checks each as it is read, so a strategy can rank thousands of models and build an
        ``Action`` only for the few read. A proposal cheaper than one the iterator already
        yielded, and a result that is neither None, a list nor an iterable, are dropped with an
        ``action-rejected`` event. A proposal no executor handles is dropped with an
        ``action-rejected`` event, and one that would unload or shrink a critical model (or a
        pinned or busy one below EMERGENCY) with an ``action-refused`` event; both name
        ``Action.strategy``. The action the ladder takes is checked again just before it runs.
    """


@hookspec(firstresult=True)
def compress_context(
    window: ContextWindow, budget_tokens: int, context: CompressionContext
) -> ContextWindow | None:
    """Make a conversation fit in fewer tokens.

    Called through ``memwarden.context.compress`` by ``memwarden context compress``, and when
    the governor takes a ``compress-context`` action under pressure (the action names a session
    registered with the governor, ``governor.sessions``, and its window is replaced by your
    result). A ``shrink-context`` reload does not call it.

    :param window: the messages as they are, each with ``tokens`` counted; ``pinned`` messages
        and the latest user message must be kept verbatim.
    :param budget_tokens: the most tokens the result may hold, as ``context.tokenizer`` counts.
    :param context: a :class:`~memwarden.context.CompressionContext`: the model's tokenizer (count
        every text you write with it), ``strategy`` (answer only when it is None or your plugin's
        name: that is how a user picks one), ``generate`` for a local model, ``session_id``.
    :return: a ``ContextWindow`` of at most ``budget_tokens`` tokens, or None if you cannot or
        were not asked. **First result wins**; with no strategy named the built-ins answer in
        the order context-summary, context-semantic, context-importance, context-recent.
    """


@hookspec
def persist_state(kind: str, record: Any, config: Config) -> None:
    """Store a record of memwarden's state or history.

    Called by the core, unless ``[state] enabled = false``, for every record of the kinds in
    :data:`PERSISTED_KINDS`: "event" for every event the warden emits (after ``on_event``),
    "reading" each time the governor sees the pressure level change, "usage" after each call made
    through ``Warden.generate``, "action" after each action the governor takes or tries, "sample"
    for every reading the governor takes (up to ten a second: queue it, do not write inline).

    :param kind: one of :data:`PERSISTED_KINDS`.
    :param record: the attrs instance of that kind (an ``Event``, a ``PressureReading``, a
        ``UsageRecord``, an ``ActionRecord``, a ``MemorySample``); ``memwarden.to_data`` turns it
        into JSON-ready data that ``memwarden.core.serialize.record_from_data(kind, data)`` turns
        back.
    :param config: the effective configuration (``config.state`` says where state lives).
    :return: nothing. Every persistence plugin receives every record.
    """


@hookspec(firstresult=True)
def read_state(kind: str, since: float | None, limit: int, config: Config) -> Sequence[Any] | None:
    """Read back the records ``persist_state`` stored, for history and reports.

    Called through ``Warden.read_state(kind, since=..., limit=...)``. A persistence plugin that
    stores records must give them back equal: ``to_data`` of each record read equals ``to_data``
    of the record stored (the conformance suite checks this).

    :param kind: one of :data:`PERSISTED_KINDS` (the warden raises ``StateError`` for any other
        before it calls this hook).
    :param since: only records that happened at or after this time (``time.time()`` seconds, as
        ``memwarden.core.serialize.record_time`` gives it: an event's ``at``, a reading's
        ``taken_at``, a call's ``started_at``), or None for all.
    :param limit: the most records to return: the newest ``limit`` of them.
    :param config: the effective configuration (``config.state`` says where state lives).
    :return: the records, as the attrs instances they were stored as, oldest first and newest
        last (an empty list when none are stored); None when you keep no readable state.
        **First result wins.**
    """


@hookspec(firstresult=True)
def pick_model(
    request: ModelRequest, candidates: Sequence[AvailableModel], context: PickContext
) -> ModelChoice | None:
    """Choose which model should serve a request.

    Called by ``memwarden pick`` and by the front door when a caller asks for "a model for this"
    (``"model": "auto"`` or a name in ``[pick.aliases]``) rather than naming one, through
    :func:`memwarden.core.picking.pick`. The built-in pickers run in this order, each answering
    only when it can decide: ``pick-preference`` (``[pick] prefer``, tryfirst), ``pick-loaded``
    (a capable model already loaded), ``pick-learned`` (the best success and latency in the
    history), ``pick-smallest`` (trylast).

    :param request: what the caller needs: ``task`` ("chat", "embed", "vision"),
        ``min_context_tokens``, ``preferred`` names (aliases already resolved).
    :param candidates: the models that are loaded or would load now without evicting anything,
        across providers; not all of them may be capable of the request
        (``memwarden.core.picking.capable`` filters them).
    :param context: a :class:`memwarden.core.picking.PickContext`: ``loaded`` models,
        ``stats_of(model)`` (calls, success rate, median latency from the history), ``config``.
    :return: a ``ModelChoice`` with the reasons (they are shown to the caller), or None to leave
        the choice to others. **First result wins.**
    """


@hookspec
def register_providers(register: Callable[[Provider], None], config: Config) -> None:
    """Register the model runtimes this plugin drives.

    Called once when the warden starts. Call ``register(provider)`` for each runtime (an
    instance of :class:`memwarden.core.providers.Provider`); registering is cheap, so do not
    contact the runtime here.

    :param register: the callback; a second provider with a name already taken is an error.
    :param config: the effective configuration.
    :return: nothing. Every plugin may register providers.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``memwarden`` command line.

    Called at most once per process, and only when the command line needs more than the
    built-in commands: when the subcommand given is not a built-in one (then your command runs),
    or when the commands are listed (``memwarden --help``, or no subcommand). ``memwarden status``
    and the other built-in commands never call it. It runs after ``--config`` is read, on the
    warden built from that configuration; with an invalid configuration it is not called.

    :param cli: the top-level click group; use ``@cli.command()``.
    :return: nothing.
    """


@hookspec
def on_event(event: Event, warden: Warden) -> None:
    """React to something that happened: a pressure level change, an action taken or failed,
    a load refused, a plugin failure.

    Called for every event the warden emits, after it is logged and before it is persisted
    ("event" records). A plugin that raises inside a hook becomes one ``plugin-failed`` event
    (``data``: plugin, hook, error, distribution) the first time it fails in that hook, not on
    every call; a plugin that fails to import is listed by ``memwarden plugins`` instead. Use it
    for notifications or metrics. Keep it fast: it runs on the governor's thread.

    :param event: what happened.
    :param warden: the running core.
    :return: nothing. Every plugin is called.
    """
