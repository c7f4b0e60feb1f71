"""What the history says: a chart of pool usage and levels, a report of what happened and what was
done, and recommendations that each state their evidence.

Everything here reads records through ``Warden.read_state`` (any persistence plugin), so the CLI
(`memwarden history`, `report`, `recommend`) and the front door's dashboard show the same thing.
Windows are counted back from the newest sample: on a running machine that is now, and on a
recorded history it is where the recording ends.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import attrs

from memwarden.core.errors import HistoryError
from memwarden.core.types import (
    ActionRecord,
    Event,
    LoadedModel,
    MemorySample,
    PressureLevel,
    UsageRecord,
)
from memwarden.core.units import format_bytes

if TYPE_CHECKING:
    from memwarden.core.warden import Warden

READ_LIMIT = 1_000_000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
BARS = " ▁▂▃▄▅▆▇█"
LEVEL_MARKS = {
    PressureLevel.NORMAL: ".",
    PressureLevel.WARNING: "w",
    PressureLevel.CRITICAL: "C",
    PressureLevel.EMERGENCY: "E",
}


def parse_since(text: str, newest: float) -> float:
    """``--since``: a duration back from ``newest`` ("90m", "24h", "7d", "2w") or a UTC date or
    time ("2026-11-20", "2026-11-20T14:00")."""
    match = _DURATION.match(text)
    if match:
        return newest - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HistoryError(
            f"--since {text!r} is neither a duration nor a date",
            hint="give a duration such as 90m, 24h, 7d or 2w, or a UTC date such as 2026-11-20",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def when(t: float) -> str:
    """A moment as people read it in a report (UTC)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


@attrs.frozen
class History:
    """The records of one window, oldest first."""

    start: float
    end: float
    samples: tuple[MemorySample, ...]
    events: tuple[Event, ...]
    actions: tuple[ActionRecord, ...]
    usage: tuple[UsageRecord, ...]

    def for_model(self, model: str) -> History:
        """Only what concerns ``model``: its requests, actions and the events naming it."""
        return attrs.evolve(
            self,
            events=tuple(e for e in self.events if e.data.get("model") == model),
            actions=tuple(a for a in self.actions if a.model == model),
            usage=tuple(u for u in self.usage if u.model == model),
        )


def load(warden: Warden, since: str | None, *, default: str = "24h") -> History:
    """The history of the window ``since`` (default ``default``) up to the newest sample."""
    newest = warden.read_state("sample", limit=1)
    end = newest[0].taken_at if newest else max(_newest_any(warden), 0.0)
    start = parse_since(since or default, end)
    return History(
        start=start,
        end=end,
        samples=tuple(warden.read_state("sample", since=start, limit=READ_LIMIT)),
        events=tuple(warden.read_state("event", since=start, limit=READ_LIMIT)),
        actions=tuple(warden.read_state("action", since=start, limit=READ_LIMIT)),
        usage=tuple(warden.read_state("usage", since=start, limit=READ_LIMIT)),
    )


def _newest_any(warden: Warden) -> float:
    moments = [e.at for e in warden.read_state("event", limit=1)]
    moments += [u.started_at for u in warden.read_state("usage", limit=1)]
    return max(moments, default=0.0)


# -- the chart ----------------------------------------------------------------------------------


@attrs.frozen
class ChartColumn:
    """One column of the chart: the peak use of each pool (percent) and the highest level."""

    start: float
    used_percent: dict[str, float]
    level: PressureLevel | None


def columns(history: History, width: int = 60) -> list[ChartColumn]:
    """The window cut into ``width`` slices, each holding the peak of its samples."""
    span = max(history.end - history.start, 1.0)
    step = span / width
    slices: list[list[MemorySample]] = [[] for _ in range(width)]
    for sample in history.samples:
        index = min(width - 1, max(0, int((sample.taken_at - history.start) / step)))
        slices[index].append(sample)
    result = []
    for n, members in enumerate(slices):
        used: dict[str, float] = {}
        for sample in members:
            for pool in sample.pools:
                percent = 100.0 * pool.used_bytes / pool.total_bytes if pool.total_bytes else 0.0
                used[pool.pool_id] = max(used.get(pool.pool_id, 0.0), percent)
        level = max((s.level for s in members), default=None)
        result.append(ChartColumn(history.start + n * step, used, level))
    return result


def chart(history: History, width: int = 60, height: int = 8) -> list[str]:
    """A terminal chart per pool: peak use over the window in block characters (``height``
    rows, 0-100 %), and the highest level of each column beneath (. w C E)."""
    cols = columns(history, width)
    pools = sorted({pool for col in cols for pool in col.used_percent})
    lines: list[str] = []
    for pool in pools:
        lines.append(f"{pool}: peak use per {_span(history, width)}, 0-100 %")
        for row in range(height, 0, -1):
            top = 100.0 * row / height
            cells = []
            for col in cols:
                value = col.used_percent.get(pool)
                if value is None:
                    cells.append(" ")
                    continue
                fill = (value - (top - 100.0 / height)) / (100.0 / height)
                cells.append(BARS[max(0, min(8, math.ceil(fill * 8)))] if fill > 0 else " ")
            lines.append(f"{top:>4.0f}% |{''.join(cells)}|")
    marks = "".join(" " if c.level is None else LEVEL_MARKS[c.level] for c in cols)
    lines.append(f"level |{marks}|")
    lines.append(f"      {when(history.start)}{' ' * max(1, width - 30)}{when(history.end)}")
    return lines


def _span(history: History, width: int) -> str:
    seconds = (history.end - history.start) / width
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


# -- the report ---------------------------------------------------------------------------------


@attrs.frozen
class ModelUsage:
    """One model's requests in a window."""

    model: str
    provider: str
    requests: int
    failures: int
    median_latency_s: float
    p95_latency_s: float
    median_ttft_s: float | None
    prompt_tokens: int
    completion_tokens: int


@attrs.frozen
class ActionSummary:
    """The actions of one kind and strategy in a window, and what they freed."""

    kind: str
    strategy: str
    taken: int
    failed: int
    freed_bytes: int
    models: tuple[str, ...]


@attrs.frozen
class Report:
    """What happened in a window, what was done, and what it freed."""

    start: float
    end: float
    samples: int
    time_at_level: dict[str, float]  # share of samples at each level, 0-1
    level_changes: dict[str, int]  # entries into each level
    peaks: dict[str, tuple[float, float]]  # pool -> (peak use percent, when)
    actions: tuple[ActionSummary, ...]
    freed_bytes: int
    usage: tuple[ModelUsage, ...]


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def usage_by_model(records: Iterable[UsageRecord]) -> list[ModelUsage]:
    """Per model: requests, failures, latencies, tokens; busiest first."""
    grouped: dict[tuple[str, str], list[UsageRecord]] = defaultdict(list)
    for record in records:
        grouped[(record.model, record.provider)].append(record)
    result = []
    for (model, provider), calls in grouped.items():
        latencies = [c.latency_s for c in calls]
        ttfts = [c.time_to_first_token_s for c in calls if c.time_to_first_token_s is not None]
        result.append(
            ModelUsage(
                model=model,
                provider=provider,
                requests=len(calls),
                failures=sum(1 for c in calls if not c.success),
                median_latency_s=statistics.median(latencies),
                p95_latency_s=_percentile(latencies, 0.95),
                median_ttft_s=statistics.median(ttfts) if ttfts else None,
                prompt_tokens=sum(c.prompt_tokens or 0 for c in calls),
                completion_tokens=sum(c.completion_tokens or 0 for c in calls),
            )
        )
    return sorted(result, key=lambda u: (-u.requests, u.model))


def report(history: History) -> Report:
    """Summarise a window: time at each level, level changes, peaks, actions, usage."""
    weights: Counter[str] = Counter()
    peaks: dict[str, tuple[float, float]] = {}
    for sample in history.samples:
        weights[sample.level.name] += sample.count
        for pool in sample.pools:
            percent = 100.0 * pool.used_bytes / pool.total_bytes if pool.total_bytes else 0.0
            if percent > peaks.get(pool.pool_id, (-1.0, 0.0))[0]:
                peaks[pool.pool_id] = (round(percent, 1), sample.taken_at)
    total = sum(weights.values())
    changes = Counter(str(e.data.get("to")) for e in history.events if e.kind == "level-changed")
    grouped: dict[tuple[str, str], list[ActionRecord]] = defaultdict(list)
    for action in history.actions:
        grouped[(str(action.kind), action.strategy)].append(action)
    actions = tuple(
        ActionSummary(
            kind=kind,
            strategy=strategy,
            taken=sum(1 for a in records if a.ok),
            failed=sum(1 for a in records if not a.ok),
            freed_bytes=sum(max(0, a.measured_freed_bytes) for a in records if a.ok),
            models=tuple(sorted({a.model for a in records if a.model})),
        )
        for (kind, strategy), records in sorted(grouped.items())
    )
    return Report(
        start=history.start,
        end=history.end,
        samples=total,
        time_at_level={
            level.name: round(weights[level.name] / total, 4) if total else 0.0
            for level in PressureLevel
        },
        level_changes=dict(sorted(changes.items())),
        peaks=peaks,
        actions=actions,
        freed_bytes=sum(a.freed_bytes for a in actions),
        usage=tuple(usage_by_model(history.usage)),
    )


# -- recommendations ----------------------------------------------------------------------------


@attrs.frozen
class Recommendation:
    """One piece of advice: what to change, about what, and the evidence behind it."""

    kind: str  # "unload", "keep", "context", "max_loaded_models"
    subject: str
    advice: str
    evidence: tuple[str, ...]


# A model with less than this share of requests is not worth holding in memory between uses.
RARE_SHARE = 0.02
# A model with at least this share is worth keeping loaded.
BUSY_SHARE = 0.25
WINDOW_S = 600.0  # models used within the same 10 minutes are wanted together


def _context_for(tokens: int) -> int:
    """The smallest power of two of at least 2048 that holds ``tokens``."""
    size = 2048
    while size < tokens:
        size *= 2
    return size


def recommend(history: History, loaded: Sequence[LoadedModel] = ()) -> list[Recommendation]:
    """Advice from a window's history: models to unload or keep, context lengths that fit the
    requests better, and ``max_loaded_models``; each with its evidence."""
    advice: list[Recommendation] = []
    days = max((history.end - history.start) / 86_400, 1 / 24)
    usage = usage_by_model(history.usage)
    total = sum(u.requests for u in usage)
    evictions = Counter(a.model for a in history.actions if a.ok and a.model)
    for model in usage:
        share = model.requests / total if total else 0.0
        per_day = model.requests / days
        failures = model.failures / model.requests
        if share < RARE_SHARE:
            evidence = [
                f"{model.requests} of {total} requests ({share:.1%}), {per_day:.1f} a day",
                f"{failures:.0%} of its requests failed",
            ]
            if evictions[model.model]:
                freed = sum(
                    a.measured_freed_bytes for a in history.actions if a.model == model.model
                )
                evidence.append(
                    f"evicted {evictions[model.model]} times under pressure, freeing "
                    f"{format_bytes(freed)} in all"
                )
            advice.append(
                Recommendation(
                    kind="unload",
                    subject=model.model,
                    advice=f'unload {model.model} after use: [models."{model.model}"] '
                    "idle_unload_after_s = 60",
                    evidence=tuple(evidence),
                )
            )
        elif share >= BUSY_SHARE:
            advice.append(
                Recommendation(
                    kind="keep",
                    subject=model.model,
                    advice=f'keep {model.model} loaded: [models."{model.model}"] priority = 10',
                    evidence=(
                        f"{model.requests} of {total} requests ({share:.0%}), {per_day:.0f} a day",
                        f"median latency {model.median_latency_s:.2f} s, p95 "
                        f"{model.p95_latency_s:.2f} s",
                    ),
                )
            )
    kept = {r.subject for r in advice if r.kind == "keep"}
    advice += preloads(history, kept)
    advice += _contexts(history, loaded)
    slots = _max_loaded(history)
    if slots is not None:
        advice.append(slots)
    return advice


def _contexts(history: History, loaded: Sequence[LoadedModel]) -> list[Recommendation]:
    tokens: dict[str, list[int]] = defaultdict(list)
    for record in history.usage:
        if record.prompt_tokens is not None:
            tokens[record.model].append(record.prompt_tokens + (record.completion_tokens or 0))
    contexts = {m.name: m.context_tokens for m in loaded if m.context_tokens}
    advice = []
    for model, sizes in sorted(tokens.items()):
        if len(sizes) < 20:
            continue
        p99 = _percentile(sizes, 0.99)
        suggested = _context_for(p99)
        current = contexts.get(model)
        if current is not None and current <= suggested:
            continue
        now = f" instead of {current}" if current else ""
        advice.append(
            Recommendation(
                kind="context",
                subject=model,
                advice=f"load {model} with a context of {suggested} tokens{now}",
                evidence=(
                    f"99% of {len(sizes)} requests needed at most {p99} tokens "
                    f"(prompt and answer); the longest {max(sizes)}",
                ),
            )
        )
    return advice


def _max_loaded(history: History) -> Recommendation | None:
    windows: dict[int, set[str]] = defaultdict(set)
    for record in history.usage:
        windows[int(record.started_at // WINDOW_S)].add(record.model)
    if len(windows) < 6:
        return None
    together = [len(models) for models in windows.values()]
    p95 = _percentile(together, 0.95)
    return Recommendation(
        kind="max_loaded_models",
        subject="[governor] max_loaded_models",
        advice=f"set [governor] max_loaded_models = {p95}",
        evidence=(
            f"in 95% of {len(together)} ten-minute windows with requests, at most {p95} models "
            f"were used; at most {max(together)} in any",
        ),
    )


# A model's first request after this long without one starts a new spell of use.
IDLE_GAP_S = 3600.0
SLOT_S = 900.0  # usual times of use are found to the quarter hour
# Start the preload this long before the usual time of use.
PRELOAD_LEAD_S = 300.0


@attrs.frozen
class UsualStart:
    """When a model usually starts being used: the quarter hour (seconds into the UTC day) in
    which its first request after an idle hour fell, on ``days`` of ``of_days`` days."""

    model: str
    slot_s: float
    days: int
    of_days: int


def usual_starts(history: History, *, min_share: float = 0.5) -> list[UsualStart]:
    """The quarter hours in which each model's spells of use usually begin: on at least
    ``min_share`` of the window's days, and at least 3 of them. The prediction behind the
    predictive preload (docs/history.md)."""
    of_days = max(1, round((history.end - history.start) / 86_400))
    times: dict[str, list[float]] = defaultdict(list)
    for record in history.usage:
        times[record.model].append(record.started_at)
    starts: dict[tuple[str, float], set[int]] = defaultdict(set)
    for model, moments in times.items():
        previous: float | None = None
        for moment in sorted(moments):
            if previous is None or moment - previous >= IDLE_GAP_S:
                slot = (moment % 86_400) // SLOT_S * SLOT_S
                starts[(model, slot)].add(int(moment // 86_400))
            previous = moment
    found = [
        UsualStart(model, slot, len(days), of_days)
        for (model, slot), days in starts.items()
        if len(days) >= max(3, min_share * of_days)
    ]
    return sorted(found, key=lambda u: (u.slot_s, u.model))


def _clock(seconds: float) -> str:
    seconds = seconds % 86_400
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"


def preloads(history: History, kept: set[str] = frozenset()) -> list[Recommendation]:
    """A preload shortly before each usual start of a model that is not kept loaded anyway."""
    return [
        Recommendation(
            kind="preload",
            subject=usual.model,
            advice=f"preload {usual.model} at {_clock(usual.slot_s - PRELOAD_LEAD_S)} UTC when "
            "memory allows (memwarden does not preload by itself yet: `memwarden load` from a "
            "timer)",
            evidence=(
                f"its first request after an idle hour came between {_clock(usual.slot_s)} and "
                f"{_clock(usual.slot_s + SLOT_S)} UTC on {usual.days} of {usual.of_days} days",
            ),
        )
        for usual in usual_starts(history)
        if usual.model not in kept
    ]
