"""Named choices: the losses, optimizers, schedules, samplers, heads, mixes, crops and face crops that search-space
files name, each in one `Registry` (after timm's `register_model` / `create_model`).

    LOSSES = Registry("loss")

    @LOSSES.register("focal")
    def _focal(params, class_counts): ...

    LOSSES.create("focal", params, class_counts)   # an unknown name: "unknown loss 'focla'; did you mean focal? ..."

Adding a choice is one decorated function; the search-space loader and `automl params` read the names from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from automl.errors import AutomlError

T = TypeVar("T")


def close_matches(name: object, known: Iterable[str], n: int = 3) -> list[str]:
    """The names in `known` that look like `name` (for a "did you mean" hint)."""
    return difflib.get_close_matches(str(name), list(known), n=n, cutoff=0.6)


class Registry(Generic[T]):
    """Names -> objects (usually factories), in registration order; `kind` names the choice in messages."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the decorated object available under `name` (the name search-space files use)."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} name {name!r} is taken")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The object registered as `name`; an AutomlError naming the close matches and every name otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            close = close_matches(name, self._entries)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise AutomlError(f"unknown {self.kind} {name!r}; {hint}allowed: {', '.join(self._entries)}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered as `name` with the arguments."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:  # an unhashable value from a YAML file is no name
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
