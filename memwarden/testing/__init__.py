"""Test support for plugin authors: the conformance suite (needs pytest)."""

from memwarden.testing.conformance import (
    CompressorPluginContract,
    DevicePluginContract,
    EstimatorPluginContract,
    PersistencePluginContract,
    ProviderContract,
    StrategyPluginContract,
    assert_no_plugin_failures,
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
    "warden_with",
]
