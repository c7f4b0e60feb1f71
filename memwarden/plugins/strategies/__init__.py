"""Built-in degradation strategies: each proposes actions through ``on_pressure``.

One module per strategy; the governor (memwarden.core.governor) orders and executes proposals.
"""
