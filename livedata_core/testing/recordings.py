"""Recordings as test fixtures: what a plugin publishes when a recording is replayed through it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

__all__ = ["Collected", "replay_recording"]


class Collected:
    """What a replay published, in order: ``models`` (every :class:`~livedata_core.models.Quote`,
    :class:`~livedata_core.models.Order`... as the runner handed it to the publisher), with :meth:`of` to pick by
    kind and identifier, and the replayed instances' ``status`` rows (skips, errors, progress)."""

    queued_quotes = 0  # read by the replay: nothing waits here, so nothing is ever conflated

    def __init__(self) -> None:
        self.models: list[Any] = []
        self.status: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"Collected({len(self.models)} models)"

    def publish(self, model: Any) -> None:
        from ..models import check_model

        check_model(model)  # what the publisher would refuse is refused here too
        self.models.append(model)

    def of(self, kind: str, identifier: str | None = None) -> list[Any]:
        """The models of one kind (``"quotes"``, ``"orders"``...), of one symbol or account if given."""
        return [m for m in self.models if m.TYPE == kind and (identifier is None or m.identifier == identifier)]


def replay_recording(directory: str | Path, *, instances: list[str] | None = None,
                     settings: dict[str, dict[str, Any]] | None = None, speed: float | None = None) -> Collected:
    """Replay a recording (``livedata run --record DIR``) through its plugins and collect what they publish,
    as fast as it parses (or at ``speed``). The plugins must be installed; a plugin's settings for an instance
    come from ``settings[instance]`` (its defaults otherwise). A captured bug becomes a regression test::

        def test_the_quote_after_the_halt_keeps_its_last():
            published = replay_recording(Path(__file__).parent / "recordings" / "halt")
            assert [q.last for q in published.of("quotes", "AAPL")][-2:] == [190.5, 190.5]
    """
    from ..runner.replay import Replay

    collected = Collected()

    async def main() -> None:
        replay = Replay(directory, collected, speed=speed, instances=instances, settings=settings)
        await replay.run()
        collected.status = replay.status()

    asyncio.run(main())
    return collected
