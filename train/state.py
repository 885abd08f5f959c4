"""Resumable training state in one safetensors file: weights, averaged weights, optimizer state, history.

Tensors go in as tensors; everything else (epoch, history, the resolved configuration, the optimizer's
param groups) goes in the file's string metadata as JSON. Nothing is pickled. A run resumes only with the
settings it was saved with (``run_fingerprint``), those that cannot change its result aside.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from architectures.checkpoint import atomic_save_tensors
from .config import TrainConfig
from .recipes import recipe_for

STATE_NAME = "train_state.safetensors"
# Settings that may differ between a run and its resumption without changing the result.
RESUME_FREE = {"resume", "max_epochs_this_run", "progress", "threads", "push_to_hub", "time_budget", "weights_dtype"}


def run_fingerprint(cfg: TrainConfig) -> dict:
    """The settings a resumed run must share with the state it resumes."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUME_FREE}


def refuse_changed_settings(path: Path, saved: dict, cfg: TrainConfig) -> None:
    """Raise naming the settings ``cfg`` changed since the state ``saved`` (its ``info``) was written to ``path``.

    Checked before loading: changed settings, arch_args say, may not even fit the saved weights. A state saved
    before a setting existed ran with its default, the recipe's for a setting the recipe fills.
    """
    recipe, fingerprint = recipe_for(cfg.arch), run_fingerprint(cfg)
    defaults = {f.name: recipe.get(f.name) if f.default is None else f.default for f in dataclasses.fields(TrainConfig)}
    before = {**defaults, **saved["fingerprint"]}
    changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
    if changed:
        raise ValueError(f"cannot resume {path}: settings changed since it was saved: {changed}")


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
