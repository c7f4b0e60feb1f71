"""Built-in plugins. Each module is registered like any third-party plugin (see core/plugins.py)."""
