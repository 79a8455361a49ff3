"""Random streams whose draws tests can predict."""

from __future__ import annotations

import random


class Fixed(random.Random):
    """An rng whose every draw is `value`: uniform(a, b) = a + (b - a) * value, so a
    full-jitter backoff is exactly `value` times its ceiling."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value
