"""A careless third-party strategy: under any pressure, propose unloading every loaded model.

It does not look at pinned, critical or busy models: the core must refuse what it may not do.
"""

from memwarden import hookimpl
from memwarden.core.strategy import unload_action


@hookimpl
def on_pressure(reading, context):
    if not reading.level:
        return None
    return [unload_action(m, "greedy", 5.0, "take it all") for m in context.loaded_models]
