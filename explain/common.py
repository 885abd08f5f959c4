"""What every explanation module shares, in a leaf that imports nothing else from ``explain``: the lock that
keeps one model's hooks to one caller, the input check, and the one [0, 1] normaliser.

Hooks live on a model while a call runs, so two threads explaining the same model at once would read each
other's activations; two threads explaining different models need not wait for each other. Hence one
re-entrant lock per model object (``model_lock``), not one for the whole process.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
UNIT_RANGE_EPS = 1e-12  # a flat map stays 0 rather than dividing by zero


def model_lock(model) -> threading.RLock:
    """The re-entrant lock of ``model`` (one per model object, made on first use, dropped with the model).

    Hold it around any forward pass of a model that another thread may be explaining: a CAM's hooks would
    otherwise see that pass. Re-entrant, because a method may compute other methods' maps while it holds it.
    """
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def check_one_image(x) -> None:
    """Raise ValueError unless ``x`` is one image, 1 x 3 x H x W."""
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected one image, 1 x 3 x H x W, got shape {tuple(x.shape)}")


def unit_range(maps) -> np.ndarray:
    """Each of B x H x W maps (or one H x W map) shifted and scaled to [0, 1], order kept, as float32; a flat
    map becomes all 0."""
    maps = np.asarray(maps, dtype=np.float32)
    axes = (-2, -1)
    maps = maps - maps.min(axis=axes, keepdims=True)
    return (maps / np.maximum(maps.max(axis=axes, keepdims=True), UNIT_RANGE_EPS)).astype(np.float32)
