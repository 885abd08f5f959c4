"""Class activation maps for every model of the zoo, with pytorch-grad-cam as the engine.

What this module adds to the library: the layer choices each architecture names (``model.cam_layers``),
MLP-Mixer's token-to-grid reshape (``model.cam_reshape``), checked arguments, speed and hygiene.

A CAM object registers hooks on the model and, after ``backward(retain_graph=True)``, keeps the graph
in ``.outputs``; so each call builds its own object, then releases its hooks, drops the graph and clears
the parameter gradients the backward pass left, whatever happens. Building the object costs two hook
registrations, microseconds beside the forward pass, so caching it would gain nothing. The time goes to
the backward pass, which is cut at the hooked layer (``_cut_graph_below``). Like the library, a call
puts the model in eval mode.
"""
from __future__ import annotations

import threading
from contextlib import ExitStack

import importlib
from functools import lru_cache

import numpy as np
import torch

from .occlusion import occlusion_batch
from .perturbation import INPUT_METHODS

# Name -> pytorch-grad-cam class name. EigenCAM needs no gradients (and no target): the first principal
# component of the layer's activations, a class-agnostic reference for the gradient-based three.
# Fused methods, after the LayerCAM paper's fusion of shallow and deep layers: the CAM at ``layer`` and every
# deeper CAM layer at once (the library's multi-layer mode: the mean of the per-layer maps, each scaled to
# [0, 1]), then blurred (Gaussian, FUSED_BLUR_SIGMA pixels) before use. "layercam-fused-tta" also averages
# over the library's aug_smooth transforms (horizontal flip x input scaled by 0.9, 1, 1.1), run here as one
# batch of six copies that all explain the original image's target. Latency: bench/cam_latency.py.
# HiResCAM multiplies gradients and activations element-wise instead of averaging the gradients; Score-CAM
# weighs each channel by what masking the input with it does to the class score (gradient-free; one forward
# pass per channel, so slow at wide layers). Not Ablation-CAM: the library's ablation layer indexes DenseNet's and
# MLP-Mixer's layers out of range, and it is slower still (docs/experiments.md).
_ENGINES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM", "eigencam": "EigenCAM",
            "hirescam": "HiResCAM", "scorecam": "ScoreCAM",
            "gradcam++-fused": "GradCAMPlusPlus", "layercam-fused-tta": "LayerCAM"}
# Methods that work on the input rather than read a layer (explain.occlusion, explain.perturbation): no layer.
_INPUT_METHODS = {"occlusion": occlusion_batch, **INPUT_METHODS}
LAYER_FREE = tuple(_INPUT_METHODS)
METHODS = tuple(_ENGINES) + LAYER_FREE
FUSED = ("gradcam++-fused", "layercam-fused-tta")
_TTA = ("layercam-fused-tta",)
FUSED_BLUR_SIGMA = 1.5
_FLIPS, _SCALES = (False, True), (0.9, 1.0, 1.1)  # the library's default aug_smooth transforms


@lru_cache(maxsize=None)
def _library():
    """pytorch_grad_cam, imported on first use: importing it pulls in torchvision and scikit-learn, about
    4.5 s on a 2-core CPU, which would otherwise delay the app's start (``warm_up`` imports it early)."""
    return importlib.import_module("pytorch_grad_cam"), importlib.import_module("pytorch_grad_cam.utils.model_targets")


def warm_up() -> None:
    """Import the CAM library now (the app calls this in a background thread after start-up)."""
    _library()
GRADIENT_FREE = ("eigencam",)  # ignores the target, too
_NO_BACKWARD = GRADIENT_FREE + ("scorecam",)

# Hooks live on the model while a call runs; two threads explaining the same model at once would read
# each other's activations, so calls into this package take turns (the app serves one model per request).
# Re-entrant: the "chosen" method computes other methods' maps while it holds it.
HOOK_LOCK = threading.RLock()


def recommended_cam(config: dict) -> tuple[str, str | None]:
    """(method, layer) that explains a checkpoint most faithfully, as its config.json records it
    (``config["cam"]``, written by ``python -m tools.choose_cam`` or ``tools.finish_checkpoint``): the best
    worst-case margin over the deletion check's baselines, on those weights, among the settings that pass
    the sanity check. Plain Grad-CAM at the default (deepest) layer where none was recorded; a layer of
    None means the default."""
    entry = config.get("cam")
    if not isinstance(entry, dict) or entry.get("method") not in METHODS:
        return "gradcam", None
    return entry["method"], entry.get("layer")


def cam_layer_choices(model) -> list[str]:
    """The layers a CAM can be taken at, shallow to deep; the last is the default."""
    return list(model.cam_layers)


def check_one_image(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected one image, 1 x 3 x H x W, got shape {tuple(x.shape)}")


def _check(model, x: torch.Tensor, method: str, layer: str | None) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; known: {', '.join(METHODS)}")
    layer = model.default_cam_layer if layer is None else layer
    if layer not in model.cam_layers:
        raise ValueError(f"{layer!r} is not a CAM layer of {type(model).__name__}; "
                         f"choose one of {', '.join(model.cam_layers)}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a normalised image batch B x 3 x H x W, got shape {tuple(x.shape)}")
    return layer


def _cut_graph_below(module, inputs, output):
    """Make the hooked layer's output a leaf: CAM needs gradients down to this layer and no further.

    The library's backward otherwise runs to the input and computes every weight's gradient; cutting
    here gives identical maps for a half to a third of the time (bench/cam_latency.py).
    """
    return output.detach().requires_grad_(True)


def _augmented(x: torch.Tensor) -> torch.Tensor:
    """The aug_smooth copies of a batch, transform-major: (6 B) x 3 x H x W; copy 1 is the original."""
    return torch.cat([(x.flip(-1) if flip else x) * scale for flip in _FLIPS for scale in _SCALES])


def _blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each of B x H x W maps, edges replicated."""
    from scipy.ndimage import gaussian_filter  # loaded with the CAM library already (grad-cam depends on it)

    return gaussian_filter(np.asarray(maps, dtype=np.float32), (0, sigma, sigma), mode="nearest")


def _unit_range(maps: np.ndarray) -> np.ndarray:
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return (maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-7)).astype(np.float32)


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


def _merge_copies(maps: np.ndarray, outputs: torch.Tensor, batch: int) -> tuple[np.ndarray, torch.Tensor]:
    """The mean map over ``_augmented``'s copies (flipped maps flipped back), and the original's outputs."""
    maps = maps.reshape(len(_FLIPS), len(_SCALES), batch, *maps.shape[1:])
    maps[_FLIPS.index(True)] = maps[_FLIPS.index(True), ..., ::-1].copy()
    original = (_FLIPS.index(False) * len(_SCALES) + _SCALES.index(1.0)) * batch  # unflipped, scale 1
    return maps.mean((0, 1)), outputs[original:original + batch]


def cam_batch(model, x: torch.Tensor, targets=None, method: str = "gradcam", layer: str | None = None):
    """CAMs of a batch: (B x H x W float32 maps in [0, 1], B x K class probabilities).

    ``targets``: one class index per image, or None for each image's predicted class. In eval mode
    each image's map equals the map of that image alone; the batch only saves time (tests, profiles).
    For the FUSED methods, ``layer`` is the shallowest of the fused layers (None: the deepest alone); the
    LAYER_FREE methods check it and ignore it.
    """
    layer = _check(model, x, method, layer)
    batch, targets = len(x), _class_indices(model, targets, len(x))
    if method in LAYER_FREE:
        with HOOK_LOCK:  # no hooks of its own, but its forward passes would run another caller's
            return _INPUT_METHODS[method](model, x, targets)
    names = list(model.cam_layers)
    modules = [model.get_submodule(name) for name in (names[names.index(layer):] if method in FUSED else [layer])]
    copies = len(_FLIPS) * len(_SCALES) if method in _TTA else 1
    uses_gradients = method not in _NO_BACKWARD
    with HOOK_LOCK, torch.set_grad_enabled(uses_gradients), ExitStack() as cleanup:
        cleanup.callback(model.zero_grad, set_to_none=True)  # backward fills the head's .grad
        if targets is None and copies > 1:  # every copy explains the original image's predicted class
            with torch.no_grad():
                targets = model.eval()(x).argmax(1).tolist()
        if uses_gradients:
            # Registered before the engine's hooks, so they see (and backward stops at) the cut output. With
            # several layers the cut is below the shallowest: the deeper ones' gradients flow through it.
            cleanup.callback(modules[0].register_forward_hook(_cut_graph_below).remove)
        engine = getattr(_library()[0], _ENGINES[method])(model, modules, reshape_transform=model.cam_reshape)
        # Not the library's ``with``: its __exit__ swallows an IndexError and only prints it.
        cleanup.callback(engine.activations_and_grads.release)
        wrapped = None if targets is None else [_library()[1].ClassifierOutputTarget(t) for t in targets] * copies
        maps = engine(_augmented(x) if copies > 1 else x, wrapped)
        outputs = engine.outputs.detach().float()
        engine.outputs = None  # the graph that backward(retain_graph=True) kept alive
    if copies > 1:
        maps, outputs = _merge_copies(maps, outputs, batch)
    if method in FUSED:
        maps = _unit_range(_blur(maps, FUSED_BLUR_SIGMA))
    return maps, torch.softmax(outputs, 1).cpu().numpy()


def cam_with_prediction(model, x: torch.Tensor, target: int | None = None, method: str = "gradcam",
                        layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image's CAM (H x W in [0, 1]) and its class probabilities (K,), from one forward pass: both for
    the cost of one, where the plain prediction is wanted (the app explains the class it serves, which
    averages in shifted and mirrored copies: ``serve.served_class``)."""
    check_one_image(x)
    maps, probs = cam_batch(model, x, None if target is None else [target], method, layer)
    return maps[0], probs[0]


def cam(model, x: torch.Tensor, target: int | None = None, method: str = "gradcam",
        layer: str | None = None) -> np.ndarray:
    """One image's CAM: H x W float32 in [0, 1] at ``x``'s resolution.

    ``x``: 1 x 3 x H x W, normalised, on the model's device. ``target``: class index, None for the
    predicted class (gradient-free methods ignore it). ``layer``: one of ``cam_layer_choices(model)``,
    None for the deepest. An unknown method, layer or class raises ValueError naming the valid ones.
    """
    return cam_with_prediction(model, x, target, method, layer)[0]
