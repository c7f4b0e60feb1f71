"""The gate every model request passes before it is sent upstream.

It resolves the model to its provider, and when the model is not loaded it runs admission through
the warden's one governor (``Governor.admit_and_load``: evict what policy allows, then load).
Each model is loaded once: requests for a model that is loading wait for that one load. When the
model does not fit, the gate tells apart a model that would fit once the requests in flight end
(:class:`Busy`: answer 503 with ``Retry-After``) from one that never fits here (:class:`NeverFits`:
the request is never sent upstream).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import anyio.to_thread
import attrs

from memwarden.core import admission
from memwarden.core.errors import InsufficientMemory, MemwardenError
from memwarden.core.governor import DEFAULT_CONTEXT_TOKENS, LoadOutcome
from memwarden.core.providers import same_model
from memwarden.core.strategy import model_key
from memwarden.core.types import LoadedModel, ModelRef
from memwarden.core.warden import Warden

# How long a model name's provider is remembered (resolving asks every provider what it offers).
RESOLVE_TTL_S = 30.0
# What Retry-After says when a model would fit once the requests in flight end.
RETRY_AFTER_S = 2


class Busy(MemwardenError):
    """The model fits once the requests in flight end: answer 503 with Retry-After."""

    code = "model-busy"

    def __init__(self, message: str, *, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message, hint=f"retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class NeverFits(InsufficientMemory):
    """The model does not fit on this device or under this cap, whatever finishes."""


class Gate:
    """Admission for requests: one per server, shared by every route."""

    def __init__(
        self,
        warden: Warden,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_refusal: Callable[[str, str], None] | None = None,
        on_load: Callable[[LoadOutcome], None] | None = None,
    ) -> None:
        self.warden = warden
        self.governor = warden.governor
        self.clock = clock
        self.on_refusal = on_refusal
        self.on_load = on_load
        self._refs: dict[str, tuple[float, ModelRef]] = {}
        self._loading: dict[tuple[str, str, int | None], asyncio.Future[None]] = {}
        # Admissions run one at a time: two loads that each fit alone must not both go ahead.
        self._admit_lock = threading.Lock()
        self.loads = 0

    # -- resolving -------------------------------------------------------------------------

    async def resolve(self, model: str) -> ModelRef:
        """The model's reference with its provider (``warden.model_ref``), remembered a while."""
        now = self.clock()
        cached = self._refs.get(model)
        if cached is not None and now - cached[0] < RESOLVE_TTL_S:
            return cached[1]
        ref = await anyio.to_thread.run_sync(self._model_ref, model)
        self._refs[model] = (now, ref)
        return ref

    def remember(self, model: str, ref: ModelRef) -> None:
        """Resolve ``model`` to ``ref`` for a while (a model ``pick_model`` chose)."""
        self._refs[model] = (self.clock(), ref)

    def _model_ref(self, model: str) -> ModelRef:
        return self.warden.model_ref(model, need_provider=True)

    def forget(self) -> None:
        """Drop remembered providers (after a provider's models changed)."""
        self._refs.clear()

    # -- admission -------------------------------------------------------------------------

    def loaded(self, ref: ModelRef) -> LoadedModel | None:
        """The loaded instance of ``ref`` as the governor last saw it (no provider call)."""
        for model in self.governor.loaded_models():
            if model.provider == ref.provider and (
                same_model(model.name, ref.name) or model.instance_id == ref.name
            ):
                return model
        return None

    async def admit(self, ref: ModelRef, context_tokens: int | None = None) -> None:
        """Return once ``ref`` is loaded, loading it through admission if needed; raise
        :class:`Busy` or :class:`NeverFits` when it does not fit."""
        if self.loaded(ref) is not None:
            return
        key = (ref.provider or "", ref.name, context_tokens)
        waiting = self._loading.get(key)
        if waiting is not None:
            await asyncio.shield(waiting)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            await anyio.to_thread.run_sync(self._admit, ref, context_tokens)
        except BaseException as exc:
            future.set_exception(exc)
            # Waiters re-raise it; mark it retrieved so that no waiter-less load logs it.
            future.exception()
            raise
        else:
            future.set_result(None)
        finally:
            del self._loading[key]

    def _admit(self, ref: ModelRef, context_tokens: int | None) -> None:
        with self._admit_lock:
            if self.loaded(ref) is not None:
                return
            try:
                outcome = self.governor.admit_and_load(ref, context_tokens=context_tokens)
                self.loads += 1
                if self.on_load is not None:
                    self.on_load(outcome)
            except InsufficientMemory as exc:
                # A provider that says room may come (a fleet whose nodes are full now).
                if getattr(exc, "transient", False) or self._fits_once_idle(ref, context_tokens):
                    self._refused("busy", ref)
                    raise Busy(
                        f"model {ref.name!r} fits once the requests in flight end: {exc.message}"
                    ) from None
                self._refused("never", ref)
                raise NeverFits(exc.message, hint=exc.hint) from None

    def _refused(self, why: str, ref: ModelRef) -> None:
        if self.on_refusal is not None:
            self.on_refusal(why, ref.name)

    def _fits_once_idle(self, ref: ModelRef, context_tokens: int | None) -> bool:
        """Whether admission would let ``ref`` in if no loaded model were serving a request:
        the same :func:`admission.admit`, on the same reading, with in-flight counts at 0."""
        governor = self.governor
        loaded = governor.loaded_models()
        busy = [m for m in loaded if governor._in_flight(m) > 0]
        if not busy:
            return False
        reading = governor.last_reading or governor.sample()
        idle = [attrs.evolve(m, requests_in_flight=0) for m in loaded]
        estimate = self.warden.estimate(ref, context_tokens or DEFAULT_CONTEXT_TOKENS)

        def costs(models: list[LoadedModel]) -> list[float]:
            found = governor.eviction_costs(models)
            return [found[model_key(m)] for m in models]

        def policy_of(model: LoadedModel) -> admission.ModelPolicy:
            return governor.policy(model)

        refused = governor.refusing(reading)
        answer = admission.admit(
            [estimate],
            reading.snapshot,
            idle,
            policy_of=policy_of,
            costs=costs,
            config=self.warden.config,
            priority=admission.configured_priority(self.warden.config, [ref.name]),
            refusing=None if refused is None else f"memory pressure is {reading.level}: {refused}",
        )
        return answer.fits
