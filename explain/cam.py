"""The public way to a map: ``cam(model, x, target, method, layer)`` and its batch and prediction variants, for
every method of the table (``explain.methods``), with checked arguments.

Every call hooks the model only while it runs, under the model's own lock (``explain.common.model_lock``), so
explaining one model never waits for another.
"""
from __future__ import annotations

import numpy as np
import torch

from . import methods
from .common import check_one_image, model_lock
from .layer_cam import FUSED_BLUR_SIGMA, warm_up
from .methods import Kind

# (METHODS, LAYER_FREE, FUSED and GRADIENT_FREE are read through __getattr__ below.)
__all__ = ["TABLE_VIEWS", "FUSED_BLUR_SIGMA", "recommended_cam", "cam_layer_choices", "cam_batch",
           "cam_with_prediction", "cam", "warm_up"]

# Views of the table, read afresh on each access (a method registered later shows in them too).
TABLE_VIEWS = {
    "METHODS": lambda: methods.names(),
    "LAYER_FREE": lambda: methods.names(Kind.INPUT, Kind.CHOSEN),
    "FUSED": lambda: methods.names(Kind.FUSED),
    "GRADIENT_FREE": lambda: tuple(name for name, m in methods.TABLE.items() if not m.uses_target),  # ignore the target
}


def __getattr__(name: str):
    if name in TABLE_VIEWS:
        return TABLE_VIEWS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recommended_cam(config: dict) -> tuple[str, str | None]:
    """(method, layer) of a checkpoint's default map, as its config.json records it (``config["cam"]``, written
    by ``python -m tools.choose_cam`` or ``tools.finish_checkpoint``). Plain Grad-CAM at the default (deepest)
    layer where none was recorded; a layer of None means the default."""
    entry = config.get("cam")
    if not isinstance(entry, dict) or entry.get("method") not in methods.TABLE:
        return "gradcam", None
    return entry["method"], entry.get("layer")


def cam_layer_choices(model) -> list[str]:
    """The layers a CAM can be taken at, shallow to deep; the last is the default."""
    return list(model.cam_layers)


def _check(model, x: torch.Tensor, method: str, layer: str | None) -> str:
    methods.get(method)  # raises, naming the known methods
    layer = model.default_cam_layer if layer is None else layer
    if layer not in model.cam_layers:
        raise ValueError(f"{layer!r} is not a CAM layer of {type(model).__name__}; "
                         f"choose one of {', '.join(model.cam_layers)}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a normalised image batch B x 3 x H x W, got shape {tuple(x.shape)}")
    return layer


def _class_indices(model, targets, batch: int) -> list[int] | None:
    """``targets`` as checked class indices, one per image; None stays None (each image's predicted class)."""
    if targets is None:
        return None
    targets = [int(t) for t in targets]
    if len(targets) != batch:
        raise ValueError(f"{len(targets)} targets for {batch} images")
    bad = [t for t in targets if not 0 <= t < model.num_classes]
    if bad:
        raise ValueError(f"target class(es) {bad} outside 0..{model.num_classes - 1}")
    return targets


def cam_batch(model, x: torch.Tensor, targets=None, method: str = "gradcam", layer: str | None = None):
    """Maps of a batch: (B x H x W float32 maps in [0, 1], B x K class probabilities).

    ``targets``: one class index per image, or None for each image's predicted class. In eval mode each image's
    map equals the map of that image alone; the batch only saves time. For the fused methods, ``layer`` is the
    shallowest of the fused layers (None: the deepest alone); the layer-free methods check it and ignore it.
    """
    layer = _check(model, x, method, layer)
    targets = _class_indices(model, targets, len(x))
    with model_lock(model):  # the input methods hook nothing, but their forward passes would run another's hooks
        return methods.get(method).function(model, x, targets, layer)


def cam_with_prediction(model, x: torch.Tensor, target: int | None = None, method: str = "gradcam",
                        layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image's map (H x W in [0, 1]) and its class probabilities (K,), from one forward pass: both for the
    cost of one, where the plain prediction is wanted (the app explains the class it serves, which averages in
    shifted and mirrored copies: ``preprocess.served_probs``)."""
    check_one_image(x)
    maps, probs = cam_batch(model, x, None if target is None else [target], method, layer)
    return maps[0], probs[0]


def cam(model, x: torch.Tensor, target: int | None = None, method: str = "gradcam",
        layer: str | None = None) -> np.ndarray:
    """One image's map: H x W float32 in [0, 1] at ``x``'s resolution.

    ``x``: 1 x 3 x H x W, normalised, on the model's device. ``target``: class index, None for the predicted
    class (target-free methods ignore it). ``layer``: one of ``cam_layer_choices(model)``, None for the deepest.
    An unknown method, layer or class raises ValueError naming the valid ones.
    """
    return cam_with_prediction(model, x, target, method, layer)[0]
