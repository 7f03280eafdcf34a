"""The search's time budget (`--budget 2h`): one deadline that every trial of every local worker stops by.

A trial that runs into the deadline stops at an epoch boundary (the objective checks after every epoch), so the
search ends by the deadline, give or take one epoch. The deadline is on the monotonic clock, which every process of
one machine shares, so worker processes receive it as it is. A later step that must fit in the same budget (an
export) takes its seconds off before the search starts: `Deadline.after(budget - reserved)`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from automl.errors import AutomlError

_NUMBER = r"\d+(?:\.\d+)?"
_DURATION = re.compile(rf"(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?(?:(?P<s>{_NUMBER})s)?")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(given: str, option: str = "--budget") -> float:
    """Seconds of "90s", "20m", "2h", "1h30m" or a bare number of seconds; anything else is the user's mistake."""
    text = given.strip().lower()
    found = _DURATION.fullmatch(f"{text}s" if re.fullmatch(_NUMBER, text) else text)
    seconds = None if found is None else sum(float(v) * _SECONDS[k] for k, v in found.groupdict().items() if v)
    if not seconds:  # no match, an empty text, or zero
        raise AutomlError(f"{option} {given!r}: give a time above zero like 90s, 20m, 2h or 1h30m")
    return seconds


def describe_duration(seconds: float) -> str:
    """`5400` -> "1h30m", `90` -> "1m30s"."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
    return text or f"{seconds:.1f}s"


@dataclass(frozen=True)
class Deadline:
    """A moment on the monotonic clock, and the budget it was set from (for messages)."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(at=time.monotonic() + seconds, seconds=seconds)

    def remaining(self) -> float:
        """Seconds left; negative once passed."""
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.remaining() <= 0

    def describe(self) -> str:
        return describe_duration(self.seconds)
