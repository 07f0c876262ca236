"""livedata broker plugin for the Charles Schwab Trader API.

``SchwabClient`` (:mod:`livedata_schwab.client`) is also the entry point for other plugins that need a Schwab
access token or ``/userPreference`` (the thinkorswim streamer plugin); tokens are saved under
:data:`TOKEN_KEY` in the livedata token store.
"""

from .settings import SchwabSettings
from .tokens import TOKEN_KEY

__all__ = ["SchwabSettings", "TOKEN_KEY"]
