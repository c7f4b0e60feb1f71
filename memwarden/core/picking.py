"""Choosing a model for a request: the candidates that fit now, what pickers may know, one call.

:func:`pick` is what `memwarden pick` (and the front door's ``"model": "auto"``) calls: it gathers
the models that are loaded or would load now without evicting anything, the usage history of
each, and the ``[pick]`` configuration into a :class:`PickContext`, and asks the ``pick_model``
hook. The built-in pickers (memwarden/plugins/pickers/) answer in this order, the first that can
deciding: the ``[pick] prefer`` list, a capable model already loaded, the best learned latency and
success, the smallest capable model.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from memwarden.core.errors import EstimateUnavailable, ModelNotFound
from memwarden.core.providers import same_model
from memwarden.core.types import (
    AvailableModel,
    LoadedModel,
    ModelChoice,
    ModelRef,
    ModelRequest,
    UsageRecord,
)

if TYPE_CHECKING:
    from memwarden.core.config import Config
    from memwarden.core.warden import Warden

# Names that mark an embedding model, and a model that reads images.
_EMBED_MARKERS = ("embed", "bge-", "minilm", "e5-", "gte-")
_VISION_MARKERS = ("llava", "vision", "-vl", "moondream", "bakllava")
TASKS = ("chat", "embed", "vision")
# A request's context when it asks for none: what a model is loaded with to be a candidate.
DEFAULT_CONTEXT_TOKENS = 4096


@attrs.frozen
class ModelStats:
    """What the usage history says about one model: how often it was used, how often it
    worked, how fast it answered."""

    model: str
    provider: str
    calls: int
    failures: int
    median_latency_s: float
    median_ttft_s: float | None = None

    @property
    def success_rate(self) -> float:
        return 1.0 - self.failures / self.calls if self.calls else 0.0


@attrs.frozen
class PickContext:
    """What a ``pick_model`` plugin may know beyond the candidates: the models loaded now, each
    model's usage statistics from the history, and the configuration (``config.pick``:
    ``prefer`` and ``aliases``)."""

    loaded: tuple[LoadedModel, ...]
    stats: Mapping[tuple[str, str], ModelStats]
    config: Config

    def is_loaded(self, model: AvailableModel) -> bool:
        """Whether ``model`` is resident in its provider now."""
        return any(
            m.provider == model.provider and same_model(m.name, model.name) for m in self.loaded
        )

    def stats_of(self, model: AvailableModel) -> ModelStats | None:
        """The usage statistics of ``model``, or None when the history has no call to it."""
        return self.stats.get((model.provider, model.name))


def is_embedding(model: AvailableModel) -> bool:
    """Whether a model serves embeddings (by its family or name), not chat."""
    text = f"{model.family or ''} {model.name}".lower()
    return any(marker in text for marker in _EMBED_MARKERS) or "bert" in (model.family or "")


def capability_problem(request: ModelRequest, model: AvailableModel) -> str | None:
    """Why ``model`` cannot serve ``request`` (the wrong task, too short a context), or None."""
    task = request.task or "chat"
    embedding = is_embedding(model)
    if task == "embed" and not embedding:
        return "not an embedding model"
    if task != "embed" and embedding:
        return "an embedding model"
    if task == "vision" and not any(m in model.name.lower() for m in _VISION_MARKERS):
        return "does not read images"
    if request.min_context_tokens and (model.max_context_tokens or 0) < request.min_context_tokens:
        have = "an unknown" if model.max_context_tokens is None else f"{model.max_context_tokens}"
        return f"{have} context, below the {request.min_context_tokens} tokens asked for"
    return None


def capable(request: ModelRequest, candidates: Iterable[AvailableModel]) -> list[AvailableModel]:
    """The candidates that can serve ``request``, in the order given."""
    return [c for c in candidates if capability_problem(request, c) is None]


def model_stats(records: Iterable[UsageRecord]) -> dict[tuple[str, str], ModelStats]:
    """Per (provider, model): calls, failures, median latency and time to first token."""
    grouped: dict[tuple[str, str], list[UsageRecord]] = {}
    for record in records:
        grouped.setdefault((record.provider, record.model), []).append(record)
    stats = {}
    for (provider, model), calls in grouped.items():
        ttfts = [c.time_to_first_token_s for c in calls if c.time_to_first_token_s is not None]
        stats[(provider, model)] = ModelStats(
            model=model,
            provider=provider,
            calls=len(calls),
            failures=sum(1 for c in calls if not c.success),
            median_latency_s=statistics.median(c.latency_s for c in calls),
            median_ttft_s=statistics.median(ttfts) if ttfts else None,
        )
    return stats


def resolve_alias(config: Config, name: str) -> str:
    """A name from ``[pick.aliases]`` as the model it stands for; any other name as it is."""
    return config.pick.aliases.get(name, name)


def candidates(
    warden: Warden, request: ModelRequest
) -> tuple[list[AvailableModel], list[LoadedModel], dict[str, str]]:
    """The models that could serve now: loaded, or loading without evicting anything at the
    request's context. Also the loaded models, and why each other model was left out."""
    loaded = warden.loaded_models()
    context_tokens = max(request.min_context_tokens, DEFAULT_CONTEXT_TOKENS)
    governor = warden.governor
    chosen: list[AvailableModel] = []
    left_out: dict[str, str] = {}
    for model in warden.available_models():
        key = f"{model.provider}/{model.name}"
        if any(m.provider == model.provider and same_model(m.name, model.name) for m in loaded):
            chosen.append(model)
            continue
        ref = ModelRef(name=model.name, provider=model.provider, path=model.gguf_path)
        try:
            plan = governor.plan_load([ref], context_tokens=context_tokens)
        except EstimateUnavailable as exc:
            left_out[key] = f"cannot be sized: {exc.message}"
            continue
        if plan.fits and not plan.evictions:
            chosen.append(model)
        else:
            left_out[key] = plan.reason or "would not fit without evicting a loaded model"
    return chosen, loaded, left_out


def pick(
    warden: Warden, request: ModelRequest, *, history: Sequence[UsageRecord] = ()
) -> tuple[ModelChoice, PickContext]:
    """Choose a model for ``request`` through the ``pick_model`` hook; a :class:`ModelNotFound`
    naming why when no candidate can serve it. ``history`` defaults to the stored usage."""
    request = attrs.evolve(
        request, preferred=tuple(resolve_alias(warden.config, p) for p in request.preferred)
    )
    found, loaded, left_out = candidates(warden, request)
    if not history:
        history = warden.read_state("usage", limit=100_000)
    context = PickContext(loaded=tuple(loaded), stats=model_stats(history), config=warden.config)
    choice = warden.hook.pick_model(request=request, candidates=found, context=context)
    if choice is None:
        why = [f"{c.provider}/{c.name}: {capability_problem(request, c)}" for c in found]
        why += [f"{name}: {reason}" for name, reason in left_out.items()]
        raise ModelNotFound(
            f"no model can serve this {request.task or 'chat'} request"
            + (f" of {request.min_context_tokens} tokens" if request.min_context_tokens else "")
            + (": " + "; ".join(why) if why else ": no provider offers any model"),
            hint="pull or load a capable model, or ask for a shorter context (--min-ctx)",
        )
    return choice, context


# Fewer calls than this teach nothing: the model is judged by size instead.
MIN_CALLS = 20


def rank(model: AvailableModel, context: PickContext) -> tuple[float, float, int, str]:
    """Sort key: learned success (higher first), median latency, then size and name."""
    stats = context.stats_of(model)
    known = stats is not None and stats.calls >= MIN_CALLS
    return (
        -(stats.success_rate if known and stats else 0.0),
        stats.median_latency_s if known and stats else float("inf"),
        model.size_bytes or 0,
        model.name,
    )
