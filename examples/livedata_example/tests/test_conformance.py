"""The Example plugin passes the livedata conformance suite."""

from livedata_core.testing.conformance import ConformanceSuite


class TestConformance(ConformanceSuite):
    pass
