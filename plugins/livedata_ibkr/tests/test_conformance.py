"""The core broker conformance suite, run against the fake gateway."""

from livedata_core.testing.conformance import ConformanceSuite


class TestConformance(ConformanceSuite):
    pass
