"""Estimation as a library: the GGUF header reader, llama.cpp's sizing arithmetic, provider
metadata and where model stores keep their files.

The estimator plugins (``gguf-estimator``, ``metadata-estimator``, ``heuristic-estimator``) are
thin hooks over this package; a third-party estimator may use it the same way. Nothing here
governs anything: the core never imports it for decisions.
"""
