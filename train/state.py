"""Resumable training state in one safetensors file: weights, EMA weights, optimizer state, history.

Tensors go in as tensors; everything else (epoch, history, the resolved configuration, the optimizer's
param groups) goes in the file's string metadata as JSON. Nothing is pickled.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from architectures.checkpoint import atomic_save_tensors

STATE_NAME = "train_state.safetensors"


def save_state(path: Path, model, ema_model, optimizer, info: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema_model is not None:
        tensors.update({f"ema.{k}": v for k, v in ema_model.state_dict().items()})
    optim_state = optimizer.state_dict()
    for param_id, slots in optim_state["state"].items():
        for slot, value in slots.items():
            tensors[f"optim.{param_id}.{slot}"] = value if torch.is_tensor(value) else torch.tensor(value)
    meta = {"info": json.dumps(info), "param_groups": json.dumps(optim_state["param_groups"])}
    atomic_save_tensors(tensors, path, metadata=meta)


def peek_info(path: Path) -> dict | None:
    """The ``info`` of a saved state without loading its tensors; None if it is unreadable."""
    try:
        with safe_open(path, framework="pt") as handle:
            return json.loads(handle.metadata()["info"])
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


def load_state(path: Path, model, ema_model, optimizer, device) -> dict:
    """Restore what ``save_state`` wrote; returns its ``info``."""
    try:
        tensors = load_file(path, device=str(device))
        with safe_open(path, framework="pt") as handle:
            meta = handle.metadata()
    except (SafetensorError, OSError) as error:
        raise RuntimeError(f"cannot resume: {path} is unreadable ({error}); delete it to start afresh") from None
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema_model is not None:
        ema_model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, slot = key.split(".", 2)
            state.setdefault(int(param_id), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["info"])
