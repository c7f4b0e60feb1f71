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
import traceback
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import attrs
import pluggy

from memwarden import hookspecs
from memwarden.core.config import Config
from memwarden.core.errors import MemwardenError, UnknownPluginError
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
    ("release-caches", "memwarden.plugins.strategies.release_caches"),
    ("compress-context", "memwarden.plugins.strategies.compress_context"),
    ("shrink-context", "memwarden.plugins.strategies.shrink_context"),
    ("idle-unload", "memwarden.plugins.strategies.idle_unload"),
    ("priority-eviction", "memwarden.plugins.strategies.priority_eviction"),
    ("refuse-loads", "memwarden.plugins.strategies.refuse_loads"),
    ("emergency-unload", "memwarden.plugins.strategies.emergency_unload"),
)

BUILTIN = "built-in"
ENTRY_POINT = "entry point"


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


@attrs.define
class _Candidate:
    info: PluginInfo
    load: Callable[[], Any]


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
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.failures: dict[tuple[str, str | None], PluginFailure] = {}
        self.failure_listeners: list[Callable[[PluginFailure], None]] = []
        env = os.environ if env is None else env

        candidates = [self._builtin(name, module) for name, module in builtins]
        if load_entry_points:
            candidates.extend(self._discover_entry_points())
        allowed = self._allowed_names(candidates, env.get(PLUGINS_ENV))
        for candidate in candidates:
            self.infos[candidate.info.name] = candidate.info
            verdict = allowed(candidate.info)
            if verdict is not None:
                candidate.info.state = "disabled"
                candidate.info.reason = verdict
                continue
            self._load(candidate)

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.pm.hook

    # -- discovery -----------------------------------------------------------------------

    def _builtin(self, name: str, module: str) -> _Candidate:
        info = PluginInfo(name=name, source=BUILTIN, module=module, version=_memwarden_version())
        return _Candidate(info=info, load=functools.partial(importlib.import_module, module))

    def _discover_entry_points(self) -> list[_Candidate]:
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
    ) -> Callable[[PluginInfo], str | None]:
        """A function that says why a plugin must not load, or None when it may."""
        known = {c.info.name for c in candidates}
        plugins_config = self.config.plugins
        where = str(self.config.path) if self.config.path else "the configuration"

        def check(names: Iterable[str], origin: str) -> None:
            unknown = sorted(set(names) - known - {BUILTINS_TOKEN})
            if unknown:
                raise UnknownPluginError(
                    f"{origin}: unknown plugin {', '.join(map(repr, unknown))}",
                    hint=f"installed plugins: {', '.join(sorted(known))} "
                    f"('{BUILTINS_TOKEN}' stands for all built-in ones); fix the name, or "
                    "install the plugin's distribution",
                )

        env_names = None
        if from_env is not None:
            env_names = {n.strip() for n in from_env.split(",") if n.strip()}
            check(env_names, f"${PLUGINS_ENV}")
        enabled = None
        if plugins_config.enabled is not None:
            enabled = set(plugins_config.enabled)
            check(enabled, f"{where}: plugins.enabled")
        check(plugins_config.disabled, f"{where}: plugins.disabled")

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

        return verdict

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
        if info is None:
            name = getattr(plugin, "__name__", None) or type(plugin).__name__
            info = PluginInfo(name=name, source="registered", module=_module_name(plugin))
            self.infos[info.name] = info
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
                return function(*args)
            except MemwardenError:
                # A deliberate, user-facing answer (a truncated model file, a refused load).
                raise
            except Exception as exc:
                self._record(info, hook, exc)
                return None

        return guarded

    def _record(self, info: PluginInfo, hook: str | None, exc: BaseException) -> None:
        key = (info.name, hook)
        previous = self.failures.get(key)
        failure = PluginFailure(
            plugin=info.name,
            distribution=info.distribution,
            hook=hook,
            error=_describe(exc),
            count=previous.count + 1 if previous else 1,
        )
        self.failures[key] = failure
        where = f"in hook {hook}" if hook else "while loading"
        log.warning(
            "plugin %r (%s) failed %s: %s",
            info.name,
            info.distribution or info.source,
            where,
            failure.error,
        )
        log.debug("".join(traceback.format_exception(exc)))
        for listener in self.failure_listeners:
            listener(failure)

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


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _module_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"
