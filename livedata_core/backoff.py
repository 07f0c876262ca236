"""Exponential backoff with jitter."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, each scaled by a random 50-100%.

    The jitter keeps many clients that lost the same server from reconnecting in lock-step.
    """

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return base * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.attempt = 0
