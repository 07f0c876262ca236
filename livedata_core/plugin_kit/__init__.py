"""What a broker plugin implements and builds on.

- :mod:`.hookspecs`: the hooks a plugin implements (``hookimpl``).
- :mod:`.broker`: ``BrokerInfo`` (what a plugin declares), ``BrokerContext`` (``ctx``: settings, session, state,
  credentials, the merge book) and ``Broker`` (how core calls a plugin).
- :mod:`.streaming`: the stream contract (``BrokerStream``, ``HEARTBEAT``); :mod:`.websocket_stream`: the base
  class for websocket brokers; :mod:`.merge`: the per-symbol merge book for partial quote updates.
- :mod:`.limits`, :mod:`.urls`, :mod:`.retry_after`: checked settings, broker URLs, ``Retry-After`` headers.
- :mod:`.token_stores`, :mod:`.tokens`: where tokens and credentials live, and which store an instance uses.
- :mod:`.plugins`: finding and loading plugins (entry points of the group ``livedata``).

Importing this package imports none of them; the common names are re-exported by ``livedata_core`` itself.
"""
