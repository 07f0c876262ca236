"""Publishing to Redis: :mod:`.sync` for scripts (``live_data_redis``), :class:`AsyncPublisher` for the runner."""

from .aio import AsyncPublisher, PublisherStats

__all__ = ["AsyncPublisher", "PublisherStats"]
