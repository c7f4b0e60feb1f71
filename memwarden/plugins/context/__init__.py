"""Built-in ``compress_context`` strategies, one module each (see memwarden.context.window)."""
