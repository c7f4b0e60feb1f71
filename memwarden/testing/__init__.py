"""Test support for plugin authors: the conformance suite (``pip install memwarden[testing]``
brings pytest). The fixtures in :mod:`memwarden.testing.pytest_plugin` reach every pytest run
through the ``pytest11`` entry point."""

import pytest

# The contracts' plain asserts explain themselves in a failure report, as a test's own would.
pytest.register_assert_rewrite("memwarden.testing.conformance")

from memwarden.testing.conformance import (  # noqa: E402
    CompressorPluginContract,
    DevicePluginContract,
    EstimatorPluginContract,
    PersistencePluginContract,
    ProviderContract,
    StrategyPluginContract,
    assert_no_plugin_failures,
    sample_records,
    warden_with,
)

__all__ = [
    "CompressorPluginContract",
    "DevicePluginContract",
    "EstimatorPluginContract",
    "PersistencePluginContract",
    "ProviderContract",
    "StrategyPluginContract",
    "assert_no_plugin_failures",
    "sample_records",
    "warden_with",
]
