"""A plugin with a bug: it raises inside a hook. memwarden must isolate it."""

from memwarden import hookimpl


@hookimpl
def detect_device(config):
    raise RuntimeError("sensor exploded")
