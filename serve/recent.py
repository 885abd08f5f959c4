"""A small thread-safe cache that keeps the most recently used entries: what the app computed for an upload
(predictions, maps and their verdicts) and the random-weights twins."""
from __future__ import annotations

import threading
from collections import OrderedDict


class RecentlyUsed:
    """At most ``capacity`` entries; ``get`` and ``put`` count as a use, and the least recently used entry
    goes first. Safe to share between request threads."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries
