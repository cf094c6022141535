"""Progress records yielded by long engine calls, and a helper to run such a generator."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass
class Progress:
    """One step of a long computation.

    Attributes:
        done: steps finished so far.
        total: number of steps (0 if unknown).
        message: short human-readable description of the current step.
        info: extra values (e.g. ``{"loss": 0.3}``) for plots and logs.
    """

    done: int
    total: int
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def run(gen: Generator[Progress, None, R], callback=None) -> R:
    """Drive a progress generator to completion and return its result.

    Args:
        gen: a generator yielding :class:`Progress` and returning a result.
        callback: optional callable receiving each :class:`Progress`.
    """
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(p)
