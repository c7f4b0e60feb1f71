"""Data that crosses a hook boundary.

Every class here is an attrs class, frozen where it can be, with units in the field names. The
cattrs converter in :mod:`memwarden.core.serialize` turns each of them into JSON and back.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping

import attrs


def _now() -> float:
    return time.time()


class PoolKind(enum.StrEnum):
    """What kind of memory a pool is."""

    SYSTEM = "system"  # RAM seen by the CPU (and by an integrated GPU that shares it)
    GPU = "gpu"  # dedicated VRAM on a discrete GPU
    UNIFIED = "unified"  # one pool shared by CPU and GPU (Apple Silicon)


@attrs.frozen
class PoolProcess:
    """A process that holds memory in a pool (a runtime serving a model, say)."""

    pid: int
    used_bytes: int
    name: str | None = None


@attrs.frozen
class MemoryPool:
    """One pool of memory a model can live in, as one device plugin sees it right now.

    ``available_bytes`` is what can be allocated without pushing something else out (for system
    RAM that includes reclaimable page cache, as the kernel counts it). ``limit_source`` names
    where ``total_bytes`` came from when it is not the raw hardware size (a cgroup limit, Metal's
    working-set limit).
    """

    id: str  # stable identifier: "system", "cuda:0", "unified", "rocm:card1"
    kind: PoolKind
    name: str
    total_bytes: int
    available_bytes: int
    used_bytes: int
    source: str  # the plugin that reported it
    limit_source: str | None = None
    swap_total_bytes: int | None = None
    swap_used_bytes: int | None = None
    uuid: str | None = None
    processes: tuple[PoolProcess, ...] = ()
    # Linux PSI: share of time (percent, 10 s average) some/all tasks stalled on memory.
    psi_some_avg10: float | None = None
    psi_full_avg10: float | None = None
    # An operating system's own verdict on memory pressure, where it publishes one (macOS).
    os_pressure: str | None = None
    oom_kills: int | None = None
    # Unified memory: the most of this pool the GPU may use (Metal's working-set limit), and
    # where that figure came from. None where the GPU has a pool of its own.
    gpu_limit_bytes: int | None = None
    gpu_limit_source: str | None = None

    @property
    def used_fraction(self) -> float:
        if self.total_bytes <= 0:
            return 0.0
        return 1.0 - self.available_bytes / self.total_bytes


@attrs.frozen
class DeviceUnavailable:
    """A device plugin found nothing it can measure, and says why (no driver, not this OS)."""

    source: str
    reason: str


@attrs.frozen
class DeviceSnapshot:
    """All pools that all device plugins saw at one moment."""

    pools: tuple[MemoryPool, ...]
    unavailable: tuple[DeviceUnavailable, ...] = ()
    taken_at: float = attrs.field(factory=_now)

    def pool(self, pool_id: str) -> MemoryPool | None:
        return next((p for p in self.pools if p.id == pool_id), None)


@attrs.frozen
class ModelRef:
    """A model as the user names it: a provider's model name, a file path, or both."""

    name: str
    provider: str | None = None
    path: str | None = None


@attrs.frozen
class PoolShare:
    """How many bytes of an estimate land in one pool."""

    pool_id: str
    bytes: int


class Confidence(enum.StrEnum):
    HIGH = "high"  # from the model file's own tensor table
    MEDIUM = "medium"  # from metadata a provider reports
    LOW = "low"  # from a parameter count and a bits-per-weight guess


@attrs.frozen
class ResidentEstimate:
    """What a model's process holds in physical memory after loading and after a prompt of
    ``prompt_tokens``, with its parts. Below the committed figure: llama.cpp reserves its compute
    buffer for the worst case and a prompt touches only part of it.

    ``mapped_weights_bytes`` are weights read through mmap: page cache, shared between processes
    that map the same file and reclaimable; they count once however many processes map them.
    """

    weights_bytes: int
    mapped_weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int
    prompt_tokens: int
    total_bytes: int = attrs.field(init=False)

    @total_bytes.default
    def _total(self) -> int:
        return (
            self.weights_bytes
            + self.mapped_weights_bytes
            + self.kv_cache_bytes
            + self.compute_bytes
            + self.overhead_bytes
        )


@attrs.frozen
class MemoryEstimate:
    """What a model costs in memory at a context length, with its parts."""

    model: ModelRef
    context_tokens: int
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int
    confidence: Confidence
    estimator: str
    per_pool: tuple[PoolShare, ...] = ()
    notes: tuple[str, ...] = ()
    # The context the model was trained for, when the estimator knows it.
    trained_context_tokens: int | None = None
    # What the process holds (system RAM), where the estimator can tell; None: assume committed.
    resident: ResidentEstimate | None = None
    # The committed figure: what the runtime allocates, touched or not (GPU and Metal hold it all).
    total_bytes: int = attrs.field(init=False)
    resident_bytes: int = attrs.field(init=False)

    @total_bytes.default
    def _total(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.overhead_bytes

    @resident_bytes.default
    def _resident_total(self) -> int:
        return self.total_bytes if self.resident is None else self.resident.total_bytes

    @property
    def committed_bytes(self) -> int:
        """What the runtime allocates: ``total_bytes`` under the name the docs use."""
        return self.total_bytes


@attrs.frozen
class AvailableModel:
    """A model a provider can load."""

    name: str
    provider: str
    size_bytes: int | None = None
    family: str | None = None
    parameters: str | None = None
    quantization: str | None = None
    max_context_tokens: int | None = None
    gguf_path: str | None = None


@attrs.frozen
class LoadedModel:
    """A model resident in a provider right now."""

    name: str
    provider: str
    # What the model holds or has reserved: the figure budgets and caps are planned with.
    total_bytes: int
    gpu_bytes: int = 0
    context_tokens: int | None = None
    idle_since: float | None = None
    expires_at: float | None = None
    requests_in_flight: int = 0
    pid: int | None = None
    instance_id: str | None = None
    # Of total_bytes, what is in physical memory now, where the provider can measure it.
    resident_bytes: int | None = None


@attrs.frozen
class GenerateResult:
    """What a model answered to a prompt sent through memwarden."""

    model: str
    provider: str
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@attrs.frozen
class UsageRecord:
    """One call made through memwarden to a model: how long it took and whether it worked."""

    model: str
    provider: str
    started_at: float
    latency_s: float
    success: bool
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    # Seconds from the request to its first token or chunk, where the call streamed (through
    # `memwarden serve`); None otherwise.
    time_to_first_token_s: float | None = None


@attrs.frozen
class ProviderStatus:
    """Whether a provider answered, and if not, why."""

    name: str
    reachable: bool
    reason: str | None = None
    version: str | None = None


class PressureLevel(enum.IntEnum):
    NORMAL = 0
    WARNING = 1
    CRITICAL = 2
    EMERGENCY = 3

    def __str__(self) -> str:
        return self.name


@attrs.frozen
class PoolPressure:
    pool_id: str
    level: PressureLevel
    used_percent: float
    available_bytes: int
    reasons: tuple[str, ...] = ()
    # Tasks stall on memory (Linux PSI) past a configured share: thrashing, whatever the usage.
    stalled: bool = False


@attrs.frozen
class PressureReading:
    """The pressure level of each pool and overall (the worst), with the snapshot behind it."""

    level: PressureLevel
    pools: tuple[PoolPressure, ...]
    snapshot: DeviceSnapshot
    managed_bytes: int = 0
    reasons: tuple[str, ...] = ()
    taken_at: float = attrs.field(factory=_now)
    # The level of the [pressure] max_managed_memory cap alone (NORMAL when there is no cap).
    managed_level: PressureLevel = PressureLevel.NORMAL


class ActionKind(enum.StrEnum):
    """What an action does; the governor has one executor for each kind."""

    UNLOAD = "unload"  # Provider.unload(instance_id or model)
    SHRINK_CONTEXT = "shrink-context"  # reload the model with context_tokens
    RELEASE_CACHE = "release-cache"  # Provider.release_caches()
    COMPRESS_CONTEXT = "compress-context"  # compress_context hook on session_id's window
    REFUSE_LOADS = "refuse-loads"  # ensure() refuses new loads while the level stays high


def _action_kind(value: ActionKind | str) -> ActionKind | str:
    # A known kind given as a plain string becomes the enum member; anything else is kept as
    # it came, so that the governor can reject it by name when it is proposed.
    if type(value) is ActionKind:
        return value
    try:
        return ActionKind(value)
    except ValueError:
        return value


@attrs.frozen
class Action:
    """A step a strategy proposes to relieve pressure; the core checks it and decides which to
    take.

    ``cost`` is unitless and only compared between proposals: 0 is free (drop a cache), 1 is an
    unloaded idle model, 10 and more hurts users (evicting a model that is being used).

    The fields an action needs depend on its kind: ``unload`` needs ``model`` and ``provider``
    (and ``instance_id`` where the runtime has several instances of a model);
    ``shrink-context`` also ``context_tokens`` (below the model's current context) and
    ``from_context_tokens``; ``release-cache`` needs ``provider``; ``compress-context`` needs
    ``session_id`` and ``budget_tokens``; ``refuse-loads`` needs nothing more.
    """

    kind: ActionKind | str = attrs.field(converter=_action_kind)
    strategy: str
    description: str
    expected_freed_bytes: int
    cost: float
    model: str | None = None
    provider: str | None = None
    pool_id: str | None = None
    instance_id: str | None = None
    context_tokens: int | None = None
    from_context_tokens: int | None = None
    session_id: str | None = None
    budget_tokens: int | None = None


@attrs.frozen
class ActionRecord:
    """An action the governor took (or tried), with its measured effect: what it was expected to
    free, what it freed in the figure that is real for its pool, and the level before and after.
    Persisted as kind "action" for `memwarden report` and `recommend`."""

    at: float
    kind: ActionKind | str = attrs.field(converter=_action_kind)
    strategy: str
    description: str
    ok: bool
    expected_freed_bytes: int
    measured_freed_bytes: int
    level_before: PressureLevel
    level_after: PressureLevel
    model: str | None = None
    provider: str | None = None
    pool_id: str | None = None
    error: str | None = None


@attrs.frozen
class PoolSample:
    """One pool in a :class:`MemorySample`: its size, what is used and its level."""

    pool_id: str
    total_bytes: int
    used_bytes: int
    level: PressureLevel


@attrs.frozen
class MemorySample:
    """The memory history's unit: every pool's use and level at one moment, persisted as kind
    "sample" on every reading the governor takes. Older samples are downsampled: ``count`` is
    how many samples one row stands for, and a downsampled row holds the peak of its bucket
    (highest use, highest level) starting at ``taken_at``."""

    taken_at: float
    level: PressureLevel
    managed_bytes: int
    pools: tuple[PoolSample, ...] = ()
    count: int = 1

    @classmethod
    def of(cls, reading: PressureReading) -> MemorySample:
        """The sample a pressure reading makes: its snapshot's pools with their levels."""
        levels = {p.pool_id: p.level for p in reading.pools}
        return cls(
            taken_at=reading.taken_at,
            level=reading.level,
            managed_bytes=reading.managed_bytes,
            pools=tuple(
                PoolSample(
                    pool_id=pool.id,
                    total_bytes=pool.total_bytes,
                    used_bytes=pool.total_bytes - pool.available_bytes,
                    level=levels.get(pool.id, PressureLevel.NORMAL),
                )
                for pool in reading.snapshot.pools
            ),
        )


@attrs.frozen
class Event:
    """Something happened: a level changed, an action was taken or failed, a plugin failed."""

    kind: str  # "level-changed", "action-taken", "action-failed", "plugin-failed", ...
    message: str
    level: PressureLevel | None = None
    data: Mapping[str, str | int | float | bool | None] = attrs.field(factory=dict)
    at: float = attrs.field(factory=_now)


@attrs.frozen
class Message:
    """One turn of a conversation."""

    role: str
    content: str
    tokens: int | None = None
    pinned: bool = False  # system prompts and the like: never dropped by compression


@attrs.frozen
class ContextWindow:
    """The conversation a managed session sends to a model."""

    messages: tuple[Message, ...]
    model: str | None = None

    @property
    def tokens(self) -> int:
        return sum(m.tokens or 0 for m in self.messages)


@attrs.frozen
class ModelRequest:
    """What a caller wants a model for, handed to ``pick_model``."""

    task: str | None = None
    min_context_tokens: int = 0
    preferred: tuple[str, ...] = ()


@attrs.frozen
class ModelChoice:
    model: AvailableModel
    reasons: tuple[str, ...]
    chooser: str


@attrs.frozen
class PluginFailure:
    """A plugin that failed to import, or raised inside a hook."""

    plugin: str
    distribution: str | None
    hook: str | None  # None when the import failed
    error: str
    count: int = 1
