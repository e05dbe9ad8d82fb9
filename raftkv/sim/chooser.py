"""Chooser: the single source of every choice the simulator makes.

``SeededChooser`` draws from one ``random.Random(seed)``, so a seed replays a run exactly.
``HypothesisChooser`` draws from hypothesis' ``st.data()``, so a failing run shrinks. The
simulator never touches any other randomness; the Raft nodes get ``random.Random`` instances
forked from the chooser.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["Chooser", "HypothesisChooser", "SeededChooser"]

T = TypeVar("T")


class Chooser(Protocol):
    def chance(self, p: float) -> bool:
        """True with probability ``p`` (never draws when ``p <= 0``)."""
        ...

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)``; ``n`` must be positive."""
        ...

    def between(self, lo: int, hi: int) -> int:
        """A uniform integer in ``[lo, hi]``."""
        ...

    def shuffle(self, items: list[Any]) -> None: ...

    def fork(self) -> random.Random:
        """A fresh, independent ``random.Random`` derived from this chooser."""
        ...


def pick(chooser: Chooser, items: Sequence[T]) -> T:
    return items[chooser.below(len(items))]


class SeededChooser:
    """Choices from one ``random.Random``; the hot path of every seeded run."""

    __slots__ = ("_randbelow", "_random", "rng")

    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)
        self._random = self.rng.random
        self._randbelow: Callable[[int], int] = self.rng._randbelow  # type: ignore[attr-defined]

    def chance(self, p: float) -> bool:
        return p > 0.0 and self._random() < p

    def below(self, n: int) -> int:
        return self._randbelow(n)

    def between(self, lo: int, hi: int) -> int:
        return lo + self._randbelow(hi - lo + 1)

    def shuffle(self, items: list[Any]) -> None:
        randbelow = self._randbelow
        for i in range(len(items) - 1, 0, -1):
            j = randbelow(i + 1)
            items[i], items[j] = items[j], items[i]

    def fork(self) -> random.Random:
        return random.Random(self.rng.getrandbits(64))


class HypothesisChooser:
    """Choices drawn from hypothesis ``st.data()``; they shrink towards 'nothing happens',
    'the first item' and 'the order given'.

    With ``coarse=True`` each ``bind`` draws a single seed and the choices until the next
    ``bind`` come from a ``SeededChooser`` over it: far fewer draws, so generating and
    shrinking long schedules is much faster, while the seed itself still shrinks towards 0.
    """

    def __init__(self, data: Any, *, coarse: bool = False) -> None:
        from hypothesis import strategies as st

        self._st = st
        self._coarse = coarse
        self._seeded: SeededChooser | None = None
        self._data = data
        self.bind(data)

    def bind(self, data: Any) -> None:
        """Draw from ``data`` from now on (a state machine gets a fresh one per rule)."""
        self._data = data
        if self._coarse:
            self._seeded = SeededChooser(data.draw(self._st.integers(0, 2**32 - 1)))

    def chance(self, p: float) -> bool:
        if self._seeded is not None:
            return self._seeded.chance(p)
        if p <= 0.0:
            return False
        if p >= 1.0:
            return True
        # Shrinks towards 0, i.e. towards "it did not happen". A narrow range keeps
        # hypothesis' preference for boundary values from skewing the odds much.
        scale = 100 if p >= 0.01 else 10_000
        roll: int = self._data.draw(self._st.integers(0, scale - 1))
        return roll >= scale - round(p * scale)

    def below(self, n: int) -> int:
        if self._seeded is not None:
            return self._seeded.below(n)
        if n <= 1:
            return 0
        value: int = self._data.draw(self._st.integers(0, n - 1))
        return value

    def between(self, lo: int, hi: int) -> int:
        if self._seeded is not None:
            return self._seeded.between(lo, hi)
        if hi <= lo:
            return lo
        value: int = self._data.draw(self._st.integers(lo, hi))
        return value

    def shuffle(self, items: list[Any]) -> None:
        if self._seeded is not None:
            self._seeded.shuffle(items)
            return
        # Shrinks towards the identity permutation.
        for i in range(len(items) - 1):
            j = i + self.below(len(items) - i)
            items[i], items[j] = items[j], items[i]

    def fork(self) -> random.Random:
        if self._seeded is not None:
            return self._seeded.fork()
        seed: int = self._data.draw(self._st.integers(0, 2**32 - 1))
        return random.Random(seed)
