"""livedata: live market and account data from brokers, published to Redis.

Public API::

    from livedata_core import live_data_redis          # the sync publisher: publish_quote("AAPL", {...})
    from livedata_core import hookimpl, BrokerInfo      # writing a broker plugin
    from livedata_core import WebSocketStream, MergeBook, PermanentError, NotEntitled
    from livedata_core import Quote, Position, Balance, Order, Transaction, Account
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _moved

_moved.install()  # old module paths (livedata_core.streaming, ...) keep importing: see _moved.py

from .plugin_kit.broker import Broker, BrokerContext, BrokerInfo
from .errors import (
    AuthError,
    BrokerError,
    ConfigError,
    ConnectionLimit,
    InvalidIdentifier,
    LivedataError,
    LoginRequired,
    NotEntitled,
    NotSupported,
    PermanentError,
    PluginError,
    PublishError,
    RateLimited,
    StreamError,
    SymbolsRefused,
)
from .plugin_kit.hookspecs import hookimpl
from .plugin_kit.merge import MergeBook
from .models import (
    Account, Balance, Bar, Depth, DepthLevel, OptionQuote, Order, Position, Quote, Transaction, from_dict, make_option_quote,
    make_quote, now_ms, to_dict,
)
from .plugin_kit.streaming import HEARTBEAT, BrokerStream

if TYPE_CHECKING:
    from .plugin_kit.websocket_stream import WebSocketStream
    from .redis_io.publisher import sync as live_data_redis

__version__ = "0.1.0"

__all__ = [
    "HEARTBEAT",
    "Account",
    "AuthError",
    "Balance",
    "Bar",
    "Broker",
    "BrokerContext",
    "BrokerError",
    "BrokerInfo",
    "BrokerStream",
    "ConfigError",
    "ConnectionLimit",
    "Depth",
    "DepthLevel",
    "InvalidIdentifier",
    "LivedataError",
    "LoginRequired",
    "MergeBook",
    "NotEntitled",
    "NotSupported",
    "OptionQuote",
    "PermanentError",
    "Order",
    "PluginError",
    "Position",
    "PublishError",
    "Quote",
    "RateLimited",
    "StreamError",
    "SymbolsRefused",
    "Transaction",
    "WebSocketStream",
    "from_dict",
    "hookimpl",
    "live_data_redis",
    "make_option_quote",
    "make_quote",
    "now_ms",
    "to_dict",
]


def __getattr__(name: str) -> Any:
    # The publisher imports redis and WebSocketStream websockets: load them only when asked, so
    # `import livedata_core` stays light.
    if name == "live_data_redis":
        from .redis_io.publisher import sync

        return sync
    if name == "WebSocketStream":
        from .plugin_kit.websocket_stream import WebSocketStream

        return WebSocketStream
    raise AttributeError(f"module 'livedata_core' has no attribute {name!r}")
