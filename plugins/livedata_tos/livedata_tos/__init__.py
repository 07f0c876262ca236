"""livedata plugin for the Schwab (thinkorswim) streamer.

Modules:

``symbols``   which symbols the streamer takes, and which service streams each
``protocol``  request frames, response codes and the errors they mean
``quotes``    LEVELONE_EQUITIES / LEVELONE_FUTURES deltas merged into complete quotes
``activity``  ACCT_ACTIVITY messages turned into orders
``stream``    :class:`~livedata_tos.stream.TosStream`, the websocket client the runner drives
``settings``  the ``[brokers.tos]`` settings
``plugin``    the hook implementations
``testing``   a local fake streamer for tests and benchmarks
"""

__version__ = "0.1.0"
