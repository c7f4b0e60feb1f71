"""The configuration file: where it is found, what it may hold, and clear errors when it is wrong.

A TOML file is parsed with :mod:`tomllib` and structured by cattrs into the attrs classes below,
with unknown keys forbidden. ``[plugins.<name>]`` tables are kept as they are and handed to that
plugin, which may structure them into its own attrs class with :meth:`Config.plugin_options`.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import cattrs
import platformdirs
from attrs import validators as v

from memwarden.core.errors import ConfigError

T = TypeVar("T")

CONFIG_ENV = "MEMWARDEN_CONFIG"
CONFIG_FILENAME = "memwarden.toml"

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class ByteSize(int):
    """A size in bytes that the config file may write as ``36GB``, ``512 MiB`` or ``1073741824``.

    ``GB`` is 10^9 bytes and ``GiB`` is 2^30, as the SI and IEC define them.
    """

    @classmethod
    def parse(cls, value: object) -> ByteSize:
        if isinstance(value, bool):
            raise ValueError("expected a size such as 8GiB or 8589934592, got a boolean")
        if isinstance(value, int):
            if value < 0:
                raise ValueError("a size cannot be negative")
            return cls(value)
        if isinstance(value, str):
            match = _SIZE.match(value)
            unit = match.group(2).lower() if match else None
            if match and unit in _UNITS:
                return cls(int(float(match.group(1)) * _UNITS[unit]))
        raise ValueError(
            f"expected a size such as 36GB, 512MiB or a number of bytes, got {value!r}"
        )


def _percent(default: float) -> Any:
    return attrs.field(default=default, validator=[v.instance_of(float), v.ge(0.0), v.le(100.0)])


def _optional_percent(default: float | None) -> Any:
    return attrs.field(
        default=default,
        validator=v.optional([v.instance_of(float), v.ge(0.0), v.le(100.0)]),
    )


@attrs.frozen
class PressureConfig:
    """When memory counts as under pressure. Percentages are of a pool's usable total."""

    warning_percent: float = _percent(70.0)
    critical_percent: float = _percent(85.0)
    emergency_percent: float = _percent(95.0)
    # Below this much free memory a pool is CRITICAL whatever its percentage.
    min_free: ByteSize | None = None
    # The most all models managed by memwarden may take together ("LLMs never take over 36 GB").
    max_managed_memory: ByteSize | None = None
    # A level is left only once usage falls this many points below the threshold that raised it.
    hysteresis_percent: float = _percent(3.0)
    # Linux PSI: the share of the last 10 s in which some (or all) tasks stalled waiting for
    # memory. Stalls mean reclaim or swap thrashing however much memory reads as available, so
    # they raise a pool's level too. 0 turns a rule off.
    psi_some_warning_percent: float | None = _optional_percent(20.0)
    psi_full_critical_percent: float | None = _optional_percent(10.0)

    def __attrs_post_init__(self) -> None:
        if not self.warning_percent < self.critical_percent < self.emergency_percent:
            raise ValueError(
                "pressure thresholds must rise: warning_percent < critical_percent < "
                f"emergency_percent (got {self.warning_percent:g} / {self.critical_percent:g} / "
                f"{self.emergency_percent:g})"
            )


@attrs.frozen
class BudgetConfig:
    """How much of a pool models may plan to use."""

    # Kept free for the operating system and other programs.
    safety_margin_percent: float = _percent(10.0)
    # The figure a model is budgeted with in system RAM: "resident" (what its process holds
    # after a prompt) or "committed" (what the runtime allocates). GPU and unified-memory pools
    # always use committed: there every reserved byte is held (docs/estimation.md).
    ram_figure: str = attrs.field(default="resident", validator=v.in_(("resident", "committed")))


def _finite(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be a finite number: {value!r}")


# The longest wait anything in memwarden sleeps on: poll() takes a 32-bit count of milliseconds
# (about 24.8 days), and an interval longer than a day is a typo, not a setting.
MAX_INTERVAL_S = 86_400.0


def seconds(
    default: float | None,
    *,
    minimum: float = 0.0,
    maximum: float | None = None,
    optional: bool = False,
) -> Any:
    """An attrs field for a duration in seconds: a finite number, at least ``minimum`` and at
    most ``maximum``. NaN and infinity are refused. For plugin options classes too."""
    checks = [v.instance_of(float), _finite, v.ge(minimum)]
    if maximum is not None:
        checks.append(v.le(maximum))
    validator = v.optional(checks) if optional else checks
    return attrs.field(default=default, validator=validator)


def count(default: int, *, minimum: int = 0, maximum: int | None = None) -> Any:
    """An attrs field for a whole number of things (retries, threads), within bounds."""
    checks = [v.instance_of(int), v.ge(minimum)]
    if maximum is not None:
        checks.append(v.le(maximum))
    return attrs.field(default=default, validator=checks)


_seconds = seconds


@attrs.frozen
class GovernorConfig:
    """How the pressure monitor samples and how the degradation ladder acts (docs/governor.md)."""

    # Seconds between samples at each level: slow when all is well, fast as pressure rises.
    interval_normal_s: float = _seconds(1.0, minimum=0.01, maximum=MAX_INTERVAL_S)
    interval_warning_s: float = _seconds(0.5, minimum=0.01, maximum=MAX_INTERVAL_S)
    interval_critical_s: float = _seconds(0.2, minimum=0.01, maximum=MAX_INTERVAL_S)
    interval_emergency_s: float = _seconds(0.1, minimum=0.01, maximum=MAX_INTERVAL_S)
    # At NORMAL, the runtimes are asked what they have loaded at most this often (pools are
    # measured at every sample); under pressure, at every sample.
    models_refresh_s: float = _seconds(5.0, minimum=0.0, maximum=MAX_INTERVAL_S)
    # While a level above NORMAL persists, the ladder runs again this often.
    retrigger_interval_s: float = _seconds(5.0, minimum=0.1, maximum=MAX_INTERVAL_S)
    # The most actions one ladder round takes before it measures and waits for the next round.
    max_actions_per_round: int = attrs.field(default=8, validator=[v.instance_of(int), v.ge(1)])
    # The most models loaded at once (ensure() evicts to honour it); None: no limit.
    max_loaded_models: int | None = attrs.field(
        default=None, validator=v.optional([v.instance_of(int), v.ge(1)])
    )
    # Linux: wake the monitor at once through a PSI trigger on /proc/pressure/memory.
    psi_trigger: bool = True
    psi_path: str = attrs.field(default="/proc/pressure/memory", validator=v.instance_of(str))
    # Wake when tasks stalled on memory this long (microseconds) within the window. Unprivileged
    # processes may only use windows that are multiples of 2 s, hence the default.
    psi_stall_us: int = attrs.field(default=150_000, validator=[v.instance_of(int), v.ge(1)])
    psi_window_us: int = attrs.field(
        default=2_000_000, validator=[v.instance_of(int), v.ge(500_000), v.le(10_000_000)]
    )
    # Linux: wake the monitor at once on cgroup events (v1 usage thresholds through an eventfd,
    # v2 memory.events) of the cgroup the system plugin measures.
    kernel_events: bool = True
    # Sample sooner than the level's interval as a pool nears its next level, and the faster
    # its headroom shrinks (never below 50 ms).
    adaptive_interval: bool = True
    # Idle unload: a model unused this long may be unloaded under pressure; None: never.
    idle_unload_after_s: float | None = _seconds(600.0, optional=True)
    # Shrink context: the smallest context a model is reloaded with, and the factor per step.
    min_context_tokens: int = attrs.field(default=2048, validator=[v.instance_of(int), v.ge(1)])
    shrink_factor: float = attrs.field(
        default=0.5, validator=[v.instance_of(float), v.gt(0.0), v.lt(1.0)]
    )
    # Shrunk contexts are restored once the level has stayed NORMAL this long (twice as long
    # for a model restored and shrunk again within this time).
    restore_after_s: float = _seconds(60.0)

    @psi_path.validator
    def _psi_path_is_psi(self, _: attrs.Attribute[str], path: str) -> None:
        # A trigger is written into this file: refuse anything that is not a PSI file, such as
        # a regular file (whose first bytes the trigger would overwrite).
        problem = psi_file_problem(path)
        if problem is not None:
            raise ValueError(f"'psi_path' must be a PSI file (it {problem}): {path!r}")

    def __attrs_post_init__(self) -> None:
        if self.psi_stall_us >= self.psi_window_us:
            raise ValueError(
                f"psi_stall_us ({self.psi_stall_us}) must be less than psi_window_us "
                f"({self.psi_window_us})"
            )


def psi_file_problem(path: str) -> str | None:
    """Why ``path`` is not a Linux PSI file, or None when it is one or does not exist (then
    the monitor samples on a timer). PSI files are kernel files that stat as regular and empty
    yet read as "some avg10=..."; a regular file with bytes in it, a FIFO, a device or a
    directory is not one."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if stat.S_ISDIR(info.st_mode):
        return None  # the monitor reports that it cannot arm a trigger on a directory
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular kernel file (a FIFO, socket or device)"
    if info.st_size > 0:
        return "is an ordinary file with data in it, which the trigger would overwrite"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            head = os.read(fd, 64)
        finally:
            os.close(fd)
    except OSError:
        return None  # unreadable: arming the trigger says why
    if not head.startswith(b"some "):
        return "does not read as a PSI file ('some avg10=...')"
    return None


@attrs.frozen
class ModelPolicy:
    """How the governor treats one model, from ``[models."<name>"]``."""

    # Higher is kept longer; evictions take the lowest priority first.
    priority: int = attrs.field(default=0, validator=v.instance_of(int))
    # Never unloaded or shrunk by the ladder, except by an emergency unload.
    pinned: bool = False
    # Never unloaded, not even in an emergency.
    critical: bool = False
    # Overrides [governor] idle_unload_after_s for this model.
    idle_unload_after_s: float | None = _seconds(None, optional=True)
    # Overrides [governor] min_context_tokens for this model.
    min_context_tokens: int | None = attrs.field(
        default=None, validator=v.optional([v.instance_of(int), v.ge(1)])
    )


_DAY_S = 86_400.0


@attrs.frozen
class StateConfig:
    """Where memwarden keeps its history (samples, events, readings, actions, usage), how long it
    keeps each part, and how often it writes (docs/history.md)."""

    enabled: bool = True
    # SQLite file; default: memwarden.db in the user data directory.
    path: str | None = None
    # Memory samples: every sample for this long, then one per minute (the peak of each minute)
    # until retention_per_minute_s, then one per hour until retention_samples_s, then none.
    retention_full_rate_s: float = seconds(3600.0, minimum=60.0)
    retention_per_minute_s: float = seconds(7 * _DAY_S, minimum=3600.0)
    retention_samples_s: float = seconds(365 * _DAY_S, minimum=3600.0)
    # Events, level changes and actions.
    retention_events_s: float = seconds(90 * _DAY_S, minimum=3600.0)
    # One row per request for this long; older requests are folded into hourly totals per model,
    # kept for retention_usage_hourly_s.
    retention_usage_s: float = seconds(7 * _DAY_S, minimum=3600.0)
    retention_usage_hourly_s: float = seconds(365 * _DAY_S, minimum=3600.0)
    # Writes are batched by a writer thread: committed at most this long after they are queued.
    flush_interval_s: float = seconds(0.5, minimum=0.01, maximum=60.0)
    # Records waiting for the writer; beyond this, new ones are dropped (and counted).
    queue_size: int = count(10_000, minimum=100)

    def __attrs_post_init__(self) -> None:
        tiers = (self.retention_full_rate_s, self.retention_per_minute_s, self.retention_samples_s)
        if not tiers[0] <= tiers[1] <= tiers[2]:
            raise ValueError(
                "sample tiers must be in order: retention_full_rate_s <= retention_per_minute_s "
                f"<= retention_samples_s (got {tiers[0]:g} / {tiers[1]:g} / {tiers[2]:g})"
            )
        if self.retention_usage_s > self.retention_usage_hourly_s:
            raise ValueError(
                "retention_usage_s must not exceed retention_usage_hourly_s (got "
                f"{self.retention_usage_s:g} / {self.retention_usage_hourly_s:g})"
            )

    def resolved_path(self) -> Path:
        if self.path:
            return Path(self.path).expanduser()
        return platformdirs.user_data_path("memwarden") / "memwarden.db"


def _names(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not all(isinstance(name, str) and name for name in value):
        raise ValueError(f"'{attribute.name}' must be a list of model names, got {list(value)!r}")


@attrs.frozen
class PickConfig:
    """How `memwarden pick` (and the front door's ``"model": "auto"``) chooses a model."""

    # Models to choose first, in order, when one of them can serve the request and fits now.
    prefer: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_names)
    # Names a caller may ask for instead of a model: "fast" = "llama3.2:3b".
    aliases: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ServeConfig:
    """``memwarden serve``: where the front door listens, and the token that guards it."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=11435, validator=[v.instance_of(int), v.ge(1), v.le(65535)])
    # Bearer token for state-changing endpoints; required to bind anything but loopback
    # ($MEMWARDEN_TOKEN overrides it).
    token: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class NoOptions:
    """The options of a plugin that takes none: any key in its table is an unknown key."""


@attrs.frozen
class PluginsConfig:
    """Which plugins load, and each plugin's own settings."""

    # None: every installed plugin. Otherwise the names that may load; "builtins" stands for all
    # built-in plugins.
    enabled: tuple[str, ...] | None = None
    disabled: tuple[str, ...] = ()
    settings: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


@attrs.frozen
class Config:
    pressure: PressureConfig = attrs.field(factory=PressureConfig)
    budget: BudgetConfig = attrs.field(factory=BudgetConfig)
    state: StateConfig = attrs.field(factory=StateConfig)
    governor: GovernorConfig = attrs.field(factory=GovernorConfig)
    pick: PickConfig = attrs.field(factory=PickConfig)
    # Per-model policy, keyed by the model's name (or a provider's instance id).
    models: Mapping[str, ModelPolicy] = attrs.field(factory=dict)
    plugins: PluginsConfig = attrs.field(factory=PluginsConfig)
    serve: ServeConfig = attrs.field(factory=ServeConfig)
    # Where the values came from: the file, or None when everything is a default.
    path: Path | None = attrs.field(default=None, eq=False)
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    # Structured plugin sections: device plugins ask on every snapshot, ten times a second.
    _plugin_options: dict[tuple[str, type], Any] = attrs.field(
        factory=dict, init=False, eq=False, repr=False
    )

    def plugin_settings(self, name: str) -> Mapping[str, Any]:
        """The ``[plugins.<name>]`` table, or an empty mapping."""
        return self.plugins.settings.get(name, {})

    def model_policy(self, *names: str | None) -> ModelPolicy:
        """The ``[models."<name>"]`` policy of the first name that has one, else the default."""
        for name in names:
            if name is not None and name in self.models:
                return self.models[name]
        return _DEFAULT_POLICY

    def plugin_options(self, name: str, cls: type[T]) -> T:
        """Structure ``[plugins.<name>]`` into a plugin's own attrs class, with clear errors.

        Structured once per config; make ``cls`` frozen, as every caller gets the same object.
        """
        cached = self._plugin_options.get((name, cls))
        if cached is not None:
            return cached
        try:
            options = _converter.structure(dict(self.plugin_settings(name)), cls)
        except Exception as exc:
            raise _config_error(self.path, exc, prefix=("plugins", name)) from None
        self._plugin_options[(name, cls)] = options
        return options

    def sources(self) -> Iterator[tuple[str, Any, str]]:
        """Every effective setting as (key path, value, where it came from)."""
        data = _converter.unstructure(self)
        for section in ("pressure", "budget", "state", "governor", "pick"):
            for key, value in data[section].items():
                yield from _sourced(self, (section, key), value)
        for model, policy in data["models"].items():
            for key, value in policy.items():
                yield from _sourced(self, ("models", model, key), value)
        yield from _sourced(self, ("plugins", "enabled"), data["plugins"]["enabled"])
        yield from _sourced(self, ("plugins", "disabled"), data["plugins"]["disabled"])
        for name, table in self.plugins.settings.items():
            for key, value in table.items():
                yield from _sourced(self, ("plugins", name, key), value)


_DEFAULT_POLICY = ModelPolicy()


def plugins_only(raw: Mapping[str, Any], path: Path | None) -> Config | None:
    """A config holding only the ``[plugins]`` section of ``raw``, so that plugin tables can be
    checked even when other sections are invalid; None when that section is itself invalid."""
    try:
        plugins = _converter.structure(raw.get("plugins", {}), PluginsConfig)
    except Exception:
        return None
    return Config(plugins=plugins, path=path, raw=raw)


def plugin_options_problems(config: Config, name: str, cls: type) -> list[str]:
    """Every problem of ``[plugins.<name>]`` against the plugin's options class, as
    ``plugins.NAME.key: what is wrong`` lines; empty when the table is valid."""
    try:
        config.plugin_options(name, cls)
    except ConfigError as exc:
        return list(exc.problems)
    return []


def _sourced(config: Config, keys: tuple[str, ...], value: Any) -> Iterator[tuple[str, Any, str]]:
    node: Any = config.raw
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            yield ".".join(keys), value, "default"
            return
        node = node[key]
    yield ".".join(keys), value, str(config.path)


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(ByteSize, lambda value, _: ByteSize.parse(value))
_converter.register_structure_hook(
    ByteSize | None, lambda value, _: None if value is None else ByteSize.parse(value)
)
_converter.register_unstructure_hook(Path, str)


def _strict_float(value: Any, _: type) -> float:
    # TOML distinguishes 70 from 70.0; users should not have to.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _strict_names(value: Any, _: type) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(n, str) for n in value):
        raise ValueError(f"expected a list of names, got {value!r}")
    return tuple(value)


_converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _strict_names)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook(int, _strict_int)


def _structure_plugins(data: Any, _: type) -> PluginsConfig:
    if not isinstance(data, Mapping):
        raise ValueError("expected a table")
    settings = {}
    for name, table in data.items():
        if name in ("enabled", "disabled"):
            continue
        if not isinstance(table, Mapping):
            raise ValueError(
                f"[plugins] may hold only enabled, disabled and [plugins.<name>] tables; "
                f"{name!r} is not a table"
            )
        settings[name] = dict(table)
    enabled = data.get("enabled")
    disabled = data.get("disabled", [])
    for key, names in (("enabled", enabled), ("disabled", disabled)):
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise ValueError(f"{key} must be a list of plugin names, got {names!r}")
    return PluginsConfig(
        enabled=tuple(enabled) if enabled is not None else None,
        disabled=tuple(disabled),
        settings=settings,
    )


_converter.register_structure_hook(PluginsConfig, _structure_plugins)


def _structure_models(data: Any, _: type) -> Mapping[str, ModelPolicy]:
    if not isinstance(data, Mapping):
        raise ValueError('expected tables such as [models."llama3.1:8b"]')
    policies: dict[str, ModelPolicy] = {}
    errors: list[Exception] = []
    for name, table in data.items():
        try:
            if not isinstance(table, Mapping):
                raise ValueError(f'[models."{name}"] must be a table of priority, pinned, ...')
            policies[name] = _converter.structure(dict(table), ModelPolicy)
        except Exception as exc:
            # Name the model in the key path, as cattrs does for attrs fields.
            exc.__notes__ = [*getattr(exc, "__notes__", []), _KeyNote(name)]
            errors.append(exc)
    if errors:
        raise cattrs.ClassValidationError("invalid [models] tables", errors, ModelPolicy)
    return policies


class _KeyNote(str):
    """A cattrs-style note naming a key, read by ``_problems`` to build the key path."""

    def __new__(cls, name: str) -> _KeyNote:
        note = super().__new__(cls, f"Structuring model policy @ {name!r}")
        note.name = name
        return note

    name: str


_converter.register_structure_hook_func(
    lambda cls: cls == Mapping[str, ModelPolicy], _structure_models
)


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file in force: ``--config``, ``$MEMWARDEN_CONFIG``, ``./memwarden.toml``, then
    the user config directory. None when there is none (all defaults)."""
    if explicit:
        return _must_exist(Path(explicit), "--config")
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return _must_exist(Path(from_env), f"${CONFIG_ENV}")
    for candidate in (
        Path.cwd() / CONFIG_FILENAME,
        platformdirs.user_config_path("memwarden") / CONFIG_FILENAME,
    ):
        if candidate.is_file():
            return candidate
    return None


def _must_exist(path: Path, named_by: str) -> Path:
    problem = config_path_problem(path)
    if problem is not None:
        raise ConfigError(
            f"{path}: {problem} (named by {named_by})",
            hint="check the path, or remove the setting to use the defaults",
        )
    return path


def config_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a config file (not found, a directory, a FIFO...), or None.
    Only stat()s the path: opening a FIFO would block until someone writes to it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "config file not found"
    except OSError as exc:
        return f"cannot read the config file: {exc.strerror}"
    if stat.S_ISDIR(mode):
        return "is a directory, not a config file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, socket or device), so it is not read as a config"
    return None


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Find, parse and validate the config; raise :class:`ConfigError` naming file and key."""
    path = find_config(explicit)
    if path is None:
        return Config()
    return parse_config_file(path)


# A config file bigger than this is not a config file.
MAX_CONFIG_BYTES = 1024 * 1024


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed TOML of a config file, with errors that name the file and what to do."""
    problem = config_path_problem(path)
    if problem is not None:
        raise ConfigError(f"{path}: {problem}", hint="give the path of a memwarden.toml")
    try:
        # O_NONBLOCK: if the path became a FIFO since the check above, open must not block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ConfigError(f"{path}: is not a regular file")
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: over {MAX_CONFIG_BYTES // 1024 // 1024} MiB, which no config file is",
            hint="give the path of a memwarden.toml",
        )
    if data.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(
            f"{path}: the file starts with a UTF-8 byte-order mark (BOM), which TOML does not "
            "allow",
            hint="save it as UTF-8 without BOM (in Notepad: 'UTF-8', not 'UTF-8 with BOM')",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the config file is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: {exc}",
            hint="fix the syntax at that line; `memwarden config check FILE` re-checks it",
        ) from None


def parse_config_file(path: Path) -> Config:
    """Read, parse and validate one config file (plugin tables are checked by the plugin
    manager, which knows the plugins)."""
    return parse_config_data(read_config_file(path), path)


def parse_config_data(raw: Mapping[str, Any], path: Path | None) -> Config:
    """Structure and validate parsed TOML; raise :class:`ConfigError` listing every problem."""
    try:
        config = _converter.structure(dict(raw), Config)
    except Exception as exc:
        raise _config_error(path, exc) from None
    return attrs.evolve(config, path=path, raw=raw)


_ATTRS_VALIDATOR = re.compile(r"^'(?P<field>[^']+)' must be (?P<rule>.*): (?P<value>.*)$")


def _problems(exc: BaseException, keys: tuple[str, ...]) -> Iterator[str]:
    """Flatten cattrs' nested validation errors into "key.path: what is wrong" lines."""
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        for extra in sorted(exc.extra_fields):
            yield f"{'.'.join((*keys, extra))}: unknown key"
        return
    if isinstance(exc, cattrs.BaseValidationError):
        for sub in exc.exceptions:
            sub_keys = keys
            for note in getattr(sub, "__notes__", []):
                name = getattr(note, "name", None)
                index = getattr(note, "index", None)
                if name is not None:
                    sub_keys = (*keys, str(name))
                elif index is not None:
                    sub_keys = (*keys, f"[{index}]")
            yield from _problems(sub, sub_keys)
        return
    message = str(exc)
    attrs_rule = _ATTRS_VALIDATOR.match(message)
    if attrs_rule:
        keys = (*keys, attrs_rule["field"])
        message = f"must be {attrs_rule['rule']}, got {attrs_rule['value']}"
    elif isinstance(exc, KeyError):
        message = f"required key {message} is missing"
    elif isinstance(exc, TypeError | AttributeError):
        # cattrs fails this way when a section that must be a table is a scalar.
        message = "expected a table of keys"
    key = ".".join(keys).replace(".[", "[")
    yield f"{key}: {message}" if key else message


def _config_error(
    path: Path | None, exc: BaseException, prefix: tuple[str, ...] = ()
) -> ConfigError:
    return invalid_config(path, list(_problems(exc, prefix)))


def invalid_config(
    path: Path | None, problems: list[str], cls: type[ConfigError] = ConfigError
) -> ConfigError:
    """One error listing every problem, each on its line as ``key.path: what is wrong``."""
    where = str(path) if path else "configuration"
    error = cls(
        f"{where}: invalid configuration\n  " + "\n  ".join(problems),
        hint="see docs/configuration.md for every key and its type (and each plugin's own "
        "table); `memwarden config check FILE` re-checks the file",
    )
    error.problems = tuple(problems)
    return error
