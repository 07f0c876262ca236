"""livedata-ibkr: Interactive Brokers market and account data through the Client Portal Web API gateway.

The hooks live in :mod:`livedata_ibkr.plugin`; a fake gateway for tests in :mod:`livedata_ibkr.testing`.
"""

__version__ = "0.1.0"
