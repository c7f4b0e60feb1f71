"""The control API: what the governor sees, and the few things a person or a program may ask of it.

``GET /health``, ``/memory/status``, ``/memory/report``, ``/memory/components``; ``POST
/memory/components/{model}/load`` and ``/unload``, ``/memory/optimize`` (one ladder round;
``?dry_run=1`` gives the plan) and ``/memory/emergency-cleanup``. Every answer is JSON; errors are
``{"error": {"code", "message", "hint"}}`` with the status their kind calls for.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any

import anyio.to_thread
import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse

from memwarden.core.errors import (
    InsufficientMemory,
    MemwardenError,
    ModelBusy,
    ModelNotFound,
)
from memwarden.core.serialize import to_data
from memwarden.core.types import Event, LoadedModel, PressureLevel, PressureReading
from memwarden.core.warden import Warden
from memwarden.serve.gate import Gate

_STATUS_OF = {ModelNotFound: 404, ModelBusy: 409, InsufficientMemory: 409}


def error_response(exc: MemwardenError) -> JSONResponse:
    """A memwarden error as JSON, with the status its kind calls for."""
    status = next((s for kind, s in _STATUS_OF.items() if isinstance(exc, kind)), 502)
    return JSONResponse({"error": exc.to_dict()}, status_code=status)


def fleet_nodes(warden: Warden) -> list[dict[str, Any]]:
    """Every node of the Ray fleet this head serves (docs/fleet.md): each node's resources,
    pressure level, pools and models, from its agent. Empty without the ``ray`` provider."""
    try:
        provider = warden.providers().get("ray")
        report = getattr(provider, "fleet_status", None)
        return list(report()) if report is not None else []
    except MemwardenError:
        return []


class Control:
    """The control endpoints over one warden and its governor."""

    def __init__(self, warden: Warden, gate: Gate, *, history: int = 600) -> None:
        self.warden = warden
        self.governor = warden.governor
        self.gate = gate
        self.started_at = time.time()
        self.events: collections.deque[Event] = collections.deque(maxlen=200)
        # (time, overall level, managed bytes, used percent per pool) per reading, for the chart.
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)

    # -- what the monitor feeds in ---------------------------------------------------------

    def event(self, event: Event) -> None:
        self.events.append(event)

    def reading(self, reading: PressureReading) -> None:
        self.history.append(
            {
                "at": reading.taken_at,
                "level": reading.level.name,
                "managed_bytes": reading.managed_bytes,
                "pools": {p.pool_id: round(p.used_percent, 2) for p in reading.pools},
            }
        )

    # -- reads -----------------------------------------------------------------------------

    def _reading(self) -> PressureReading:
        reading = self.governor.last_reading
        if reading is None:
            reading = self.governor.sample()
            self.governor.observe(reading)
            self.reading(reading)
        return reading

    def status_data(self) -> dict[str, Any]:
        """What ``GET /memory/status`` answers (and the dashboard shows)."""
        reading = self._reading()
        levels = {p.pool_id: p for p in reading.pools}
        pools = []
        for pool in reading.snapshot.pools:
            pressure = levels.get(pool.id)
            pools.append(
                {
                    "id": pool.id,
                    "name": pool.name,
                    "kind": str(pool.kind.value) if hasattr(pool.kind, "value") else str(pool.kind),
                    "total_bytes": pool.total_bytes,
                    "used_bytes": pool.used_bytes,
                    "available_bytes": pool.available_bytes,
                    "used_percent": round(pressure.used_percent, 2) if pressure else None,
                    "level": pressure.level.name if pressure else PressureLevel.NORMAL.name,
                }
            )
        return {
            "level": reading.level.name,
            "taken_at": reading.taken_at,
            "managed_bytes": reading.managed_bytes,
            "max_managed_bytes": _cap(self.warden),
            "refusing_loads": self.governor.refusing_reason,
            "reasons": list(reading.reasons),
            "pools": pools,
            "models": [self._model_data(m) for m in self.governor.loaded_models()],
            "nodes": fleet_nodes(self.warden),
        }

    def _model_data(self, model: LoadedModel) -> dict[str, Any]:
        policy = self.governor.policy(model)
        return {
            "name": model.name,
            "provider": model.provider,
            "instance_id": model.instance_id,
            "total_bytes": model.total_bytes,
            "resident_bytes": model.resident_bytes,
            "gpu_bytes": model.gpu_bytes,
            "context_tokens": model.context_tokens,
            "requests_in_flight": self.warden.usage.in_flight(model.name, model.provider),
            "priority": policy.priority,
            "pinned": policy.pinned,
            "critical": policy.critical,
        }

    async def health(self, request: Request) -> JSONResponse:
        """``GET /health``: up, the level, and each provider's reachability."""
        statuses = await anyio.to_thread.run_sync(self.warden.provider_statuses)
        reading = self.governor.last_reading
        return JSONResponse(
            {
                "service": "memwarden",
                "status": "ok",
                "uptime_s": round(time.time() - self.started_at, 3),
                "level": reading.level.name if reading else None,
                "providers": [to_data(s) for s in statuses],
            }
        )

    async def status(self, request: Request) -> JSONResponse:
        """``GET /memory/status``."""
        return JSONResponse(await anyio.to_thread.run_sync(self.status_data))

    async def report(self, request: Request) -> JSONResponse:
        """``GET /memory/report``: the status, the pressure history, the latest ladder round and
        the recent events (the action log)."""
        data = await anyio.to_thread.run_sync(self.status_data)
        last = self.governor.last_round
        data.update(
            history=list(self.history),
            last_round=to_data(last) if last is not None else None,
            events=[to_data(e) for e in self.events],
            loads_through_front_door=self.gate.loads,
        )
        return JSONResponse(data)

    async def components(self, request: Request) -> JSONResponse:
        """``GET /memory/components``: loaded models with their policy, and what can load."""

        def collect() -> dict[str, Any]:
            loaded = self.governor.loaded_models()
            return {
                "loaded": [self._model_data(m) for m in loaded],
                # The same models as LoadedModel records (what the command line reads).
                "models": [
                    to_data(
                        attrs.evolve(
                            m,
                            requests_in_flight=max(
                                m.requests_in_flight,
                                self.warden.usage.in_flight(m.name, m.provider),
                            ),
                        )
                    )
                    for m in loaded
                ],
                "available": [to_data(m) for m in self.warden.available_models()],
            }

        return JSONResponse(await anyio.to_thread.run_sync(collect))

    async def plan(self, request: Request) -> JSONResponse:
        """``GET /memory/plan?load=M&load=N&provider=&priority=&context=``: what `memwarden
        plan` shows, from this governor (the command line asks here while serve runs)."""
        from memwarden.cli.plan import compute, plan_data
        from memwarden.core.governor import DEFAULT_CONTEXT_TOKENS

        query = request.query_params
        try:
            priority = int(query["priority"]) if "priority" in query else None
            context = int(query.get("context", DEFAULT_CONTEXT_TOKENS))
        except ValueError:
            return _bad("priority and context must be whole numbers")

        def plan() -> dict[str, Any]:
            found = compute(
                self.warden, query.getlist("load"), query.get("provider"), priority, context
            )
            return plan_data(found)

        try:
            return JSONResponse(await anyio.to_thread.run_sync(plan))
        except MemwardenError as exc:
            return error_response(exc)

    # -- actions ---------------------------------------------------------------------------

    async def load(self, request: Request) -> JSONResponse:
        """``POST /memory/components/{model}/load[?ctx=N&priority=P&provider=NAME]``: load
        through admission, exactly as ``memwarden load``."""
        model = request.path_params["model"]
        query = request.query_params
        try:
            context = int(query["ctx"]) if "ctx" in query else None
            priority = int(query["priority"]) if "priority" in query else None
            keep_alive = float(query["keep_alive"]) if "keep_alive" in query else None
            options = json.loads(query["options"]) if "options" in query else None
        except ValueError:
            return _bad("ctx and priority must be whole numbers, keep_alive a number, options JSON")
        if options is not None and not isinstance(options, dict):
            return _bad("options must be a JSON object of runtime options")
        provider = query.get("provider")

        def load() -> dict[str, Any]:
            ref = self.warden.model_ref(model, provider, need_provider=True)
            outcome = self.governor.admit_and_load(
                ref, priority, context_tokens=context, keep_alive_s=keep_alive, options=options
            )
            if self.gate.on_load is not None:
                self.gate.on_load(outcome)
            return {
                "loaded": to_data(outcome.loaded),
                "evicted": [to_data(m) for m in outcome.plan.evicted],
                "priority": outcome.plan.priority,
            }

        try:
            return JSONResponse(await anyio.to_thread.run_sync(load))
        except MemwardenError as exc:
            return error_response(exc)

    async def unload(self, request: Request) -> JSONResponse:
        """``POST /memory/components/{model}/unload[?provider=NAME&emergency=1]``: a model
        serving requests made through memwarden is refused (409) unless ``emergency``."""
        model = request.path_params["model"]
        provider = request.query_params.get("provider")
        emergency = request.query_params.get("emergency", "0").lower() in ("1", "true", "yes")

        def unload() -> dict[str, Any]:
            unloaded = self.warden.unload(model, provider=provider, emergency=emergency)
            self._resample()
            return {"unloaded": [to_data(m) for m in unloaded]}

        try:
            return JSONResponse(await anyio.to_thread.run_sync(unload))
        except MemwardenError as exc:
            return error_response(exc)

    async def optimize(self, request: Request) -> JSONResponse:
        """``POST /memory/optimize``: one ladder round now; ``?dry_run=1``: the actions the
        ladder would take, taking none."""
        dry_run = request.query_params.get("dry_run", "0").lower() in ("1", "true", "yes")

        def optimize() -> dict[str, Any]:
            reading = self.governor.sample()
            self.governor.observe(reading)
            self.reading(reading)
            if dry_run:
                return {
                    "dry_run": True,
                    "level": reading.level.name,
                    "actions": [to_data(a) for a in self.governor.propose(reading)],
                }
            report = self.governor.relieve(reading)
            return {"dry_run": False, "level": reading.level.name, "round": to_data(report)}

        try:
            return JSONResponse(await anyio.to_thread.run_sync(optimize))
        except MemwardenError as exc:
            return error_response(exc)

    async def emergency_cleanup(self, request: Request) -> JSONResponse:
        """``POST /memory/emergency-cleanup``: unload every model that is not critical, pinned
        and busy ones included (what an EMERGENCY allows)."""

        def cleanup() -> dict[str, Any]:
            unloaded: list[dict[str, Any]] = []
            kept: list[str] = []
            failed: list[dict[str, str]] = []
            for model in self.warden.loaded_models():
                label = model.instance_id or model.name
                if self.governor.policy(model).critical:
                    kept.append(f"{label} is critical")
                    continue
                try:
                    self.warden.provider(model.provider).unload(label)
                    unloaded.append(to_data(model))
                except MemwardenError as exc:
                    failed.append({"model": label, "error": exc.message})
            self.warden.emit(
                Event(
                    kind="emergency-cleanup",
                    message=f"emergency cleanup through the control API: unloaded "
                    f"{len(unloaded)} model(s)",
                    level=self.governor.level,
                    data={"unloaded": len(unloaded), "kept": len(kept)},
                )
            )
            self._resample()
            return {"unloaded": unloaded, "kept": kept, "failed": failed}

        return JSONResponse(await anyio.to_thread.run_sync(cleanup))

    def _resample(self) -> None:
        reading = self.governor.sample()
        self.governor.observe(reading)
        self.reading(reading)


def _bad(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "bad-request", "message": message, "hint": None}}, status_code=400
    )


def _cap(warden: Warden) -> int | None:
    cap = warden.config.pressure.max_managed_memory
    return int(cap) if cap is not None else None
