"""Registries of catalog entries that remember who supplied each one."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import CatalogError, RequestError

T = TypeVar("T")


@dataclass(frozen=True)
class Provenance:
    """Where an entry came from: the plugin, and the data file when there is one."""

    plugin: str
    file: str | None = None

    def __str__(self) -> str:
        return f"{self.plugin} ({self.file})" if self.file else self.plugin


@dataclass(frozen=True)
class Entry(Generic[T]):
    key: str
    data: T
    provenance: Provenance


class Registry(Generic[T]):
    """Key → entry, with provenance. A duplicate key is an error naming both contributors."""

    def __init__(self, kind: str, field: str):
        self.kind = kind  # "GPU", "model", ...
        self.field = field  # the request field that names it, for error messages
        self._entries: dict[str, Entry[T]] = {}

    def add(self, key: str, data: T, provenance: Provenance) -> None:
        if key in self._entries:
            first = self._entries[key].provenance
            raise CatalogError([(f"{self.kind} {key!r}", f"registered twice: by {first} and by {provenance}")])
        self._entries[key] = Entry(key, data, provenance)

    def replace(self, key: str, data: T) -> None:
        """Swap an entry's data for a derived version of it (a runtime merged with the one it extends,
        declared defaults filled in), keeping who supplied it."""
        self._entries[key] = Entry(key, data, self._entries[key].provenance)

    def order_by(self, sort_key) -> None:
        """Put the entries in the order ``sort_key(entry)`` gives (the runtimes: the default first, then by key -
        one file per runtime would otherwise order them by file name)."""
        self._entries = dict(sorted(self._entries.items(), key=lambda item: sort_key(item[1])))

    def remove(self, key: str) -> Entry[T]:
        """Take an entry out (a third-party entry that failed a load-time check)."""
        return self._entries.pop(key)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def keys(self) -> list[str]:
        return list(self._entries)

    def get(self, key: str, field: str | None = None) -> Entry[T]:
        """The entry for ``key``, or a :class:`RequestError` naming the closest valid keys."""
        try:
            return self._entries[key]
        except (KeyError, TypeError):
            field = field or self.field
            close = self.closest(str(key))
            raise RequestError([(field, f"unknown {self.kind} {key!r}")], suggestions={field: close}) from None

    def closest(self, key: str, n: int = 5) -> list[str]:
        keys = list(self._entries)
        close = difflib.get_close_matches(key.lower(), keys, n=n, cutoff=0.5)
        if len(close) < n:  # substring matches catch "4090" → rtx_4090
            close += [k for k in keys if key.lower() in k and k not in close][: n - len(close)]
        return close or keys[:n]

