"""Emergency unload: in an EMERGENCY, unload every model not marked critical.

The last resort: cost 1000 and up, so every other proposal goes first. Pinned models are
unloaded too (pinned protects from the ordinary ladder); ``critical = true`` models never are.
Models with requests in flight are included: the machine is about to swap or kill something.
"""

from __future__ import annotations

from memwarden.core.governor import Governor, model_key, unload_action
from memwarden.core.types import Action, PressureLevel, PressureReading
from memwarden.core.warden import Warden
from memwarden.hookspecs import hookimpl

NAME = "emergency-unload"
BASE_COST = 1000.0


@hookimpl
def on_pressure(reading: PressureReading, warden: Warden) -> list[Action] | None:
    if reading.level < PressureLevel.EMERGENCY:
        return None
    governor = Governor.for_warden(warden)
    candidates = [m for m in governor.loaded_models() if not governor.policy(m).critical]
    costs = governor.eviction_costs(candidates)
    return [
        unload_action(model, NAME, BASE_COST + costs[model_key(model)], "survive an EMERGENCY")
        for model in candidates
    ]
