"""The built-in ``pick_model`` plugins, one module each, asked in this order (the first that can
decide answers): ``preference`` (``[pick] prefer``), ``loaded`` (a capable model already
loaded), ``learned`` (the best success and latency in the usage history), ``smallest``."""
