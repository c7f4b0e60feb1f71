"""The small core: config, plugin manager, data types, pressure levels and the warden."""
