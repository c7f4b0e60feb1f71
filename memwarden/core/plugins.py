"""Finding, filtering, registering and isolating plugins.

Built-in plugins are registered by module path exactly like third-party ones, which come from the
``memwarden`` entry-point group. ``$MEMWARDEN_PLUGINS`` and the config's ``[plugins] enabled`` /
``disabled`` restrict what loads. A plugin that fails to import, or raises inside a hook, is
recorded with its name and distribution and isolated: its hook returns None and everything else
keeps working.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any

import attrs
import pluggy

from memwarden import hookspecs
from memwarden.core.calls import Calls
from memwarden.core.config import Config, invalid_config, plugin_options_problems
from memwarden.core.errors import ConfigError, MemwardenError, PluginError, UnknownPluginError
from memwarden.core.types import PluginFailure

log = logging.getLogger("memwarden.plugins")

PLUGINS_ENV = "MEMWARDEN_PLUGINS"
# Stands for every built-in plugin in $MEMWARDEN_PLUGINS and [plugins] enabled.
BUILTINS_TOKEN = "builtins"

# (name, module path). Order is registration order; pluggy calls later registrations first.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("system", "memwarden.plugins.system"),
    ("sqlite-state", "memwarden.plugins.sqlite_state"),
    ("nvidia", "memwarden.plugins.nvidia"),
    ("apple", "memwarden.plugins.apple"),
    ("amd", "memwarden.plugins.amd"),
    ("gguf-estimator", "memwarden.plugins.gguf_estimator"),
    ("metadata-estimator", "memwarden.plugins.metadata_estimator"),
    ("heuristic-estimator", "memwarden.plugins.heuristic_estimator"),
    ("ollama", "memwarden.plugins.ollama"),
    ("lmstudio", "memwarden.plugins.lmstudio"),
    ("llamacpp", "memwarden.plugins.llamacpp"),
    ("ray", "memwarden.plugins.ray_provider"),
    ("release-caches", "memwarden.plugins.strategies.release_caches"),
    ("compress-context", "memwarden.plugins.strategies.compress_context"),
    # compress_context is first-result and later registrations answer first: summary first.
    ("context-recent", "memwarden.plugins.context.recent"),
    ("context-importance", "memwarden.plugins.context.importance"),
    ("context-semantic", "memwarden.plugins.context.semantic"),
    ("context-summary", "memwarden.plugins.context.summary"),
    ("shrink-context", "memwarden.plugins.strategies.shrink_context"),
    ("idle-unload", "memwarden.plugins.strategies.idle_unload"),
    ("priority-eviction", "memwarden.plugins.strategies.priority_eviction"),
    ("refuse-loads", "memwarden.plugins.strategies.refuse_loads"),
    ("emergency-unload", "memwarden.plugins.strategies.emergency_unload"),
    ("pick-preference", "memwarden.plugins.pickers.preference"),
    # Plain hooks are called last-registered first: loaded is asked before learned.
    ("pick-learned", "memwarden.plugins.pickers.learned"),
    ("pick-loaded", "memwarden.plugins.pickers.loaded"),
    ("pick-smallest", "memwarden.plugins.pickers.smallest"),
)

BUILTIN = "built-in"
ENTRY_POINT = "entry point"

# The module (or object) attribute through which a plugin declares its ``[plugins.NAME]``
# options: an attrs class, structured and checked by the core at start-up and by
# `memwarden config check`. A plugin that declares none has its table passed on unchecked.
OPTIONS_ATTRIBUTE = "OPTIONS"


class PluginContractError(PluginError):
    """A plugin answered a hook with something the contract does not allow (the wrong type, a
    pool id or provider name another plugin already reported)."""

    code = "plugin-contract"


@attrs.frozen
class HookAnswer:
    """One plugin's answer to a hook called plugin by plugin (:meth:`Plugins.call_each`)."""

    plugin: str
    result: Any = None
    # Why there is no answer: no answer within the deadline, or a memwarden error it raised.
    missed: str | None = None


@attrs.define
class PluginInfo:
    """What ``memwarden plugins`` shows about one plugin."""

    name: str
    source: str  # BUILTIN or ENTRY_POINT
    module: str
    distribution: str | None = None
    version: str | None = None
    state: str = "enabled"  # "enabled", "disabled", "failed"
    reason: str | None = None
    hooks: list[str] = attrs.field(factory=list)
    # The attrs class of its [plugins.NAME] options, where it declares one (OPTIONS).
    options: type | None = attrs.field(default=None, repr=False)


@attrs.define
class _Candidate:
    info: PluginInfo
    load: Callable[[], Any]


def any_entry_points(group: str, path: Iterable[str] | None = None) -> bool:
    """Whether any installed distribution declares an entry point in ``group``: its
    ``entry_points.txt`` has a ``[group]`` section. A look at each ``*.dist-info`` folder on
    ``sys.path``; ``importlib.metadata`` (a sixth of memwarden's start-up, for the email parser
    it imports) is used only when one does. Errs towards True: anything unreadable says yes."""
    header = f"[{group}]"
    for entry in sys.path if path is None else path:
        try:
            with os.scandir(entry or ".") as found:
                names = [e.name for e in found if e.name.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue  # a zip file or a folder that is gone: importlib.metadata finds nothing
        for name in names:
            points = os.path.join(entry or ".", name, "entry_points.txt")
            try:
                with open(points, encoding="utf-8", errors="replace") as handle:
                    if any(line.strip() == header for line in handle):
                        return True
            except FileNotFoundError:
                continue
            except OSError:
                return True
    return False


def _memwarden_version() -> str:
    from memwarden import __version__

    return __version__


class Plugins:
    """The plugin manager of one warden: pluggy underneath, with filtering and isolation."""

    def __init__(
        self,
        config: Config,
        *,
        builtins: Iterable[tuple[str, str]] = BUILTIN_PLUGINS,
        load_entry_points: bool = True,
        env: Mapping[str, str] | None = None,
        validate: bool = True,
    ) -> None:
        self.config = config
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: dict[tuple[str, str | None], PluginFailure] = {}
        self.failure_listeners: list[Callable[[PluginFailure], None]] = []
        # Hook calls made plugin by plugin under a deadline (call_each), one per plugin and hook.
        self.calls = Calls()
        self._failures_lock = threading.Lock()
        env = os.environ if env is None else env

        candidates = [self._builtin(name, module) for name, module in builtins]
        if load_entry_points:
            candidates.extend(self._discover_entry_points())
        self.known = sorted({c.info.name for c in candidates})
        # Only a full discovery knows every plugin a table may be for; a harness that
        # registers its plugins later (tests, the conformance suite) has its tables checked
        # as each plugin is registered.
        self._discovered_all = load_entry_points
        problems, allowed = self._allowed_names(candidates, env.get(PLUGINS_ENV))
        for candidate in candidates:
            info = candidate.info
            taken = self.infos.get(info.name)
            if taken is not None:
                # Never registered: pluggy would refuse the name and dump its registry, and the
                # plugin that had the name first must not be marked failed for it.
                info.state = "refused"
                info.reason = (
                    f"its name {info.name!r} is taken by the {taken.source} plugin from "
                    f"{taken.distribution or taken.module}; rename its entry point"
                )
                self.infos[f"{info.name} ({info.distribution or info.module})"] = info
                log.warning("plugin %r from %s refused: %s", info.name, info.module, info.reason)
                continue
            self.infos[info.name] = info
            verdict = allowed(info)
            if verdict is not None:
                info.state = "disabled"
                info.reason = verdict
                continue
            self._load(candidate)
        #: ``file: plugins.NAME.key: what is wrong`` lines; raised at once unless ``validate``
        #: is off (`memwarden config check` collects them with the others).
        self.problems = problems + self.settings_problems()
        if self.problems and validate:
            raise _problems_error(self.config, self.problems, self.known)

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    # -- discovery -----------------------------------------------------------------------

    def _builtin(self, name: str, module: str) -> _Candidate:
        info = PluginInfo(name=name, source=BUILTIN, module=module, version=_memwarden_version())
        return _Candidate(info=info, load=functools.partial(importlib.import_module, module))

    def _discover_entry_points(self) -> list[_Candidate]:
        if not any_entry_points(hookspecs.PROJECT_NAME):
            return []
        from importlib.metadata import entry_points

        found = []
        for ep in entry_points(group=hookspecs.PROJECT_NAME):
            dist = ep.dist
            info = PluginInfo(
                name=ep.name,
                source=ENTRY_POINT,
                module=ep.value,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
            )
            found.append(_Candidate(info=info, load=ep.load))
        return found

    def _allowed_names(
        self, candidates: list[_Candidate], from_env: str | None
    ) -> tuple[list[str], Callable[[PluginInfo], str | None]]:
        """The problems of the config's plugin lists, and a function that says why a plugin
        must not load (None when it may). ``$MEMWARDEN_PLUGINS`` is checked at once: it is not
        part of any file."""
        known = {c.info.name for c in candidates}
        plugins_config = self.config.plugins
        where = str(self.config.path) if self.config.path else "the configuration"
        problems: list[str] = []

        env_names = None
        if from_env is not None:
            env_names = {n.strip() for n in from_env.split(",") if n.strip()}
            unknown = sorted(env_names - known - {BUILTINS_TOKEN})
            if unknown:
                raise UnknownPluginError(
                    f"${PLUGINS_ENV}: unknown plugin {', '.join(map(repr, unknown))}",
                    hint=_known_hint(known),
                )
            if not env_names:
                raise ConfigError(
                    f"${PLUGINS_ENV} is set but names no plugin, so nothing would be measured",
                    hint=f"unset it to load every installed plugin, or name some: "
                    f"'{BUILTINS_TOKEN}' stands for all built-in ones",
                )
        enabled = None
        if plugins_config.enabled is not None:
            enabled = set(plugins_config.enabled)
            if not enabled:
                problems.append(
                    "plugins.enabled: names no plugin, so nothing would be measured; remove "
                    f"the key to load every installed plugin, or list some ('{BUILTINS_TOKEN}' "
                    "stands for all built-in ones)"
                )
        for key, names in (("enabled", enabled or ()), ("disabled", plugins_config.disabled)):
            unknown = sorted(set(names) - known - {BUILTINS_TOKEN})
            if unknown:
                problems.append(
                    f"plugins.{key}: unknown plugin {', '.join(map(repr, unknown))} "
                    f"(installed: {', '.join(sorted(known))})"
                )

        def listed(names: set[str], info: PluginInfo) -> bool:
            return info.name in names or (info.source == BUILTIN and BUILTINS_TOKEN in names)

        def verdict(info: PluginInfo) -> str | None:
            if env_names is not None and not listed(env_names, info):
                return f"not listed in ${PLUGINS_ENV}"
            if enabled is not None and not listed(enabled, info):
                return f"not listed in plugins.enabled of {where}"
            if info.name in plugins_config.disabled:
                return f"listed in plugins.disabled of {where}"
            return None

        return problems, verdict

    def settings_problems(self) -> list[str]:
        """What is wrong with the ``[plugins.NAME]`` tables: a table for no installed plugin,
        and each loaded plugin's table checked against the options class it declares
        (``OPTIONS``): unknown keys, wrong types, values out of range."""
        problems: list[str] = []
        for name in self.config.plugins.settings:
            info = self.infos.get(name)
            if info is None:
                if not self._discovered_all:
                    continue
                problems.append(
                    f"plugins.{name}: no installed plugin is named {name!r} "
                    f"(installed: {', '.join(self.known)})"
                )
            elif info.state == "enabled" and info.options is not None:
                problems.extend(plugin_options_problems(self.config, name, info.options))
        return problems

    # -- loading and isolation -----------------------------------------------------------

    def _load(self, candidate: _Candidate) -> None:
        info = candidate.info
        try:
            plugin = candidate.load()
            self.register(plugin, info)
        except Exception as exc:
            info.state = "failed"
            info.reason = f"failed to load: {_describe(exc)}"
            self._record(info, None, exc)

    def register(self, plugin: object, info: PluginInfo | None = None) -> None:
        """Register a plugin object or module; its hooks are isolated from failures."""
        options = getattr(plugin, OPTIONS_ATTRIBUTE, None)
        if options is not None and not attrs.has(options):
            raise PluginContractError(
                f"plugin {getattr(info, 'name', plugin)!r}: {OPTIONS_ATTRIBUTE} must be an "
                f"attrs class, got {type(options).__name__}"
            )
        if info is None:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            info = PluginInfo(name=name, source="registered", module=_module_name(plugin))
            self.infos[info.name] = info
            if options is not None and name in self.config.plugins.settings:
                problems = plugin_options_problems(self.config, name, options)
                if problems:
                    raise _problems_error(self.config, problems)
        info.options = options
        self.pm.register(plugin, name=info.name)
        for caller in self.pm.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    info.hooks.append(caller.name)
                    if not (impl.hookwrapper or impl.wrapper):
                        impl.function = self._guard(info, caller.name, impl.function)
        info.hooks.sort()

    def _guard(
        self, info: PluginInfo, hook: str, function: Callable[..., Any]
    ) -> Callable[..., Any]:
        @functools.wraps(function)
        def guarded(*args: Any) -> Any:
            try:
                result = function(*args)
            except MemwardenError:
                # A deliberate, user-facing answer (a truncated model file, a refused load).
                raise
            except Exception as exc:
                self._record(info, hook, exc)
                return None
            if isinstance(result, Iterator):
                # A lazy answer (on_pressure may return a generator) runs when it is read.
                return self._guard_iterator(info, hook, result)
            return result

        return guarded

    def _guard_iterator(self, info: PluginInfo, hook: str, items: Iterator[Any]) -> Iterator[Any]:
        """``items``, isolated as :meth:`_guard` isolates a call: a failure while reading them
        is recorded, and ends them."""
        try:
            yield from items
        except MemwardenError:
            raise
        except Exception as exc:
            self._record(info, hook, exc)

    def record_failure(self, plugin: str, hook: str | None, exc: BaseException) -> None:
        """Record that ``plugin`` failed in ``hook`` (None: while loading), as the isolation
        does for a hook that raises; the core calls it for answers that break a contract."""
        info = self.infos.get(plugin) or PluginInfo(name=plugin, source="registered", module="?")
        self._record(info, hook, exc)

    def _record(self, info: PluginInfo, hook: str | None, exc: BaseException) -> None:
        key = (info.name, hook)
        error = _describe(exc)
        with self._failures_lock:
            previous = self.failures.get(key)
            failure = PluginFailure(
                plugin=info.name,
                distribution=info.distribution,
                hook=hook,
                error=error,
                count=previous.count + 1 if previous else 1,
            )
            self.failures[key] = failure
        where = f"in hook {hook}" if hook else "while loading"
        # Named once: a plugin failing the same way on every sample (a state file that cannot be
        # written, a device that is gone) must not fill the log with the same line.
        level = (
            logging.DEBUG if previous is not None and previous.error == error else logging.WARNING
        )
        log.log(
            level,
            "plugin %r (%s) failed %s: %s",
            info.name,
            info.distribution or info.source,
            where,
            failure.error,
        )
        log.debug("".join(traceback.format_exception(exc)))
        for listener in self.failure_listeners:
            listener(failure)

    def call_each(
        self,
        hook: str,
        *,
        deadline_s: float,
        kwargs: Mapping[str, Any] | None = None,
        kwargs_for: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> list[HookAnswer]:
        """Call every implementation of ``hook`` on its own daemon thread, in registration order,
        and wait for each until ``deadline_s`` after it started.

        A plugin that misses the deadline is recorded as failed (once per call) and answers
        ``missed``; while that call still runs it is not called again, and answers ``missed``
        at once. ``kwargs_for(plugin)`` gives per-plugin arguments (a register callback).
        """
        caller = getattr(self.pm.hook, hook)
        started = []
        for impl in caller.get_hookimpls():
            if impl.hookwrapper or impl.wrapper:
                continue
            given = kwargs_for(impl.plugin_name) if kwargs_for is not None else kwargs or {}
            args = [given[name] for name in impl.argnames]
            pending, fresh = self.calls.start(
                (hook, impl.plugin_name), f"{impl.plugin_name}.{hook}", impl.function, *args
            )
            started.append((impl.plugin_name, pending, fresh))
        answers = []
        for name, pending, fresh in started:
            pending.wait(pending.started_at + deadline_s - self.calls.clock())
            if not pending.done:
                age = self.calls.clock() - pending.started_at
                missed = f"no answer within {deadline_s:g} s" + (
                    "" if fresh else f" (its call of {age:.0f} s ago is still running)"
                )
                if not pending.abandoned:
                    pending.abandoned = True
                    self.record_failure(name, hook, HookTimeout(missed))
                answers.append(HookAnswer(name, missed=missed))
            elif pending.error is not None:
                self.record_failure(name, hook, pending.error)
                answers.append(HookAnswer(name, missed=_describe(pending.error)))
            else:
                answers.append(HookAnswer(name, result=pending.result))
        return answers

    def plugin_list(self) -> list[PluginInfo]:
        failed_in_hooks = {name for name, hook in self.failures if hook}
        result = []
        for info in self.infos.values():
            if info.state == "enabled" and info.name in failed_in_hooks:
                errors = [
                    f"{f.hook}: {f.error}" for (n, _), f in self.failures.items() if n == info.name
                ]
                info = attrs.evolve(info, state="failed", reason="raised in " + "; ".join(errors))
            result.append(info)
        return result


class HookTimeout(PluginError):
    """A plugin did not answer a hook within its deadline."""

    code = "plugin-timeout"


def _describe(exc: BaseException) -> str:
    text = str(exc.message if isinstance(exc, MemwardenError) else exc)
    # A plugin's message is untrusted: never echo megabytes of it.
    if len(text) > 500:
        text = text[:500] + f"... ({len(text) - 500} more characters)"
    return f"{type(exc).__name__}: {text}"


def _known_hint(known: Iterable[str]) -> str:
    return (
        f"installed plugins: {', '.join(sorted(known))} ('{BUILTINS_TOKEN}' stands for all "
        "built-in ones); fix the name, or install the plugin's distribution"
    )


def _problems_error(config: Config, problems: list[str], known: Iterable[str] = ()) -> ConfigError:
    unknown = any("unknown plugin" in p or "no installed plugin" in p for p in problems)
    error = invalid_config(config.path, problems, UnknownPluginError if unknown else ConfigError)
    if unknown:
        error.hint = _known_hint(known) + "; `memwarden config check FILE` re-checks the file"
    return error


def _module_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"
