"""Squeeze-and-excitation attention: the channel weights an SE block applies, read by forward hooks.

Every SE block of the zoo is ``architectures._blocks.SqueezeExcite``; its sigmoid is the submodule
``gate`` (output B x C x 1 x 1), so a hook on it reads the excitations without touching ``forward``.
Models without SE blocks give an empty list: nothing is invented for them.

Class profiles (the analysis of Hu et al., CVPR 2018, section 7.2): the mean excitation of every SE
block for every class over the validation split, computed once at export time and stored beside the
checkpoint as ``se_profiles.safetensors``. Early blocks are expected to be shared across classes and
late blocks class-specific.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from architectures._blocks import SqueezeExcite
from architectures.checkpoint import atomic_save_tensors
from preprocess import normalize

from .common import check_one_image, model_lock

PROFILES_NAME = "se_profiles.safetensors"


def se_blocks(model) -> list[tuple[str, SqueezeExcite]]:
    """(dotted name, module) of every SE block, in registration order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, SqueezeExcite)]


def has_se(model) -> bool:
    return bool(se_blocks(model))


@contextmanager
def _record_gates(model):
    """Yield a list that fills with (block name, gate output B x C) in forward order; hooks removed after."""
    records, handles = [], []
    for name, block in se_blocks(model):
        def hook(module, inputs, output, name=name):
            records.append((name, output.detach().flatten(1)))
        handles.append(block.gate.register_forward_hook(hook))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def se_attention(model, x: torch.Tensor) -> tuple[list[tuple[str, np.ndarray]], np.ndarray | None]:
    """``se_excitations`` and ``se_weighted_map`` of one image from one forward pass (the app shows both).

    ([], None) for a model without SE blocks.
    """
    check_one_image(x)
    blocks = se_blocks(model)
    if not blocks:
        return [], None
    captured = {}

    def hook(module, inputs, output):
        captured["weighted"] = output  # x * e: the last block's input scaled by its excitation

    with model_lock(model), torch.no_grad(), _record_gates(model) as records:
        handle = blocks[-1][1].register_forward_hook(hook)
        try:
            model(x)
        finally:
            handle.remove()
    excitations = [(name, gate[0].float().cpu().numpy()) for name, gate in records]
    # e > 0, so the positive part of x * e is e * max(x, 0).
    weighted = captured["weighted"].clamp(min=0).sum(1, keepdim=True)
    weighted = F.interpolate(weighted.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    weighted = weighted - weighted.min()
    return excitations, (weighted / weighted.max().clamp(min=1e-12)).cpu().numpy().astype(np.float32)


def se_excitations(model, x: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """(block name, C channel weights in (0, 1)) for every SE gate of one image, in forward order."""
    return se_attention(model, x)[0]


def se_weighted_map(model, x: torch.Tensor) -> np.ndarray:
    """The last SE block's feature maps weighted by their excitations: H x W in [0, 1] at x's size.

    sum_c e_c * max(A_c, 0) over the block's input A, the positive part as in CAM: where the channels
    the block turned up are active. Raises ValueError for a model without SE blocks.
    """
    weighted = se_attention(model, x)[1]
    if weighted is None:
        raise ValueError(f"{type(model).__name__} has no squeeze-and-excitation blocks")
    return weighted


@torch.no_grad()
def compute_se_profiles(model, images_uint8: torch.Tensor, labels: torch.Tensor, mean, std,
                        class_names: list[str] | None = None, batch_size: int = 250) -> dict:
    """Mean excitation per class per SE block over ``images_uint8`` (the validation split).

    Returns {"blocks": [name, ...] in forward order, "class_names": [...], "counts": (K,) images per
    class, "class_mean": {block: K x C}, "mean": {block: C}}, ``mean`` being over all images.
    An empty "blocks" list for a model without SE.
    """
    if class_names is None:
        class_names = getattr(model, "config", {}).get("class_names") or [str(i) for i in range(model.num_classes)]
    num_classes = len(class_names)
    device = next(model.parameters()).device
    mean, std = torch.as_tensor(mean, device=device).float(), torch.as_tensor(std, device=device).float()
    labels = labels.long()
    sums, blocks = {}, []
    for start in range(0, len(images_uint8), batch_size):
        batch = normalize(images_uint8[start:start + batch_size].to(device), mean, std)
        batch_labels = labels[start:start + batch_size].to(device)
        with model_lock(model), _record_gates(model) as records:
            model(batch)
        for name, gate in records:
            if name not in sums:
                blocks.append(name)
                sums[name] = torch.zeros(num_classes, gate.shape[1], dtype=torch.float64, device=device)
            sums[name].index_add_(0, batch_labels, gate.double())
    counts = torch.bincount(labels, minlength=num_classes).double().to(device)
    return {
        "blocks": blocks,
        "class_names": list(class_names),
        "counts": counts.cpu().numpy(),
        "class_mean": {b: (sums[b] / counts.clamp(min=1)[:, None]).float().cpu().numpy() for b in blocks},
        "mean": {b: (sums[b].sum(0) / counts.sum()).float().cpu().numpy() for b in blocks},
    }


def save_se_profiles(profiles: dict, folder) -> Path:
    """Write ``se_profiles.safetensors`` into the checkpoint folder (atomically); returns its path."""
    tensors = {"counts": torch.from_numpy(np.asarray(profiles["counts"], dtype=np.float64))}
    for block in profiles["blocks"]:
        tensors[f"{block}/class_mean"] = torch.from_numpy(profiles["class_mean"][block])
        tensors[f"{block}/mean"] = torch.from_numpy(profiles["mean"][block])
    metadata = {"blocks": json.dumps(profiles["blocks"]), "class_names": json.dumps(profiles["class_names"])}
    path = Path(folder) / PROFILES_NAME
    atomic_save_tensors(tensors, path, metadata=metadata)
    return path


def load_se_profiles(folder) -> dict | None:
    """The profiles saved beside a checkpoint, or None where there are none (not an SE model, not computed)."""
    path = Path(folder) / PROFILES_NAME
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(path)
        blocks, class_names = json.loads(metadata["blocks"]), json.loads(metadata["class_names"])
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path} is not a readable SE profile file: {error}") from None
    profiles = {
        "blocks": blocks,
        "class_names": class_names,
        "counts": tensors["counts"].numpy(),
        "class_mean": {b: tensors[f"{b}/class_mean"].numpy() for b in blocks},
        "mean": {b: tensors[f"{b}/mean"].numpy() for b in blocks},
    }
    for block in blocks:
        shape, channels = profiles["class_mean"][block].shape, profiles["mean"][block].shape
        if shape[0] != len(class_names) or channels != shape[1:]:
            raise ValueError(f"{path}: {block} has class means {shape} and mean {channels} "
                             f"for {len(class_names)} classes")
    return profiles


def class_specificity(profiles: dict) -> list[tuple[str, float]]:
    """(block, spread) by depth: the standard deviation across class means, averaged over channels.

    Near 0: the block excites the same channels whatever the class (shared features); larger: the
    excitation depends on the class.
    """
    return [(b, float(profiles["class_mean"][b].std(0).mean())) for b in profiles["blocks"]]
