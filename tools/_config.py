"""Adding a tool's findings to a checkpoint's config.json without touching the rest of it."""
from __future__ import annotations

import json
from pathlib import Path

from architectures.checkpoint import CONFIG_NAME, atomic_write_json


def update_config(folder, set_fields: dict | None = None, remove: tuple[str, ...] = ()) -> Path:
    """Set ``set_fields`` and drop the keys in ``remove`` in ``folder``'s config.json, every other key as
    it was, re-read just before the (atomic) write so that another tool's fields written since are kept."""
    path = Path(folder) / CONFIG_NAME
    config = json.loads(path.read_text())
    config = {key: value for key, value in config.items() if key not in remove}
    config.update(set_fields or {})
    atomic_write_json(path, config)
    return path
