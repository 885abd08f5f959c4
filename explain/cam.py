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

# Name -> pytorch-grad-cam class name. EigenCAM needs no gradients (and no target): the first principal
# component of the layer's activations, a class-agnostic reference for the gradient-based three.
_ENGINES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM", "eigencam": "EigenCAM"}
METHODS = tuple(_ENGINES)


@lru_cache(maxsize=None)
def _library():
    """pytorch_grad_cam, imported on first use: importing it pulls in torchvision and scikit-learn, about
    4.5 s on a 2-core CPU, which would otherwise delay the app's start (``warm_up`` imports it early)."""
    return importlib.import_module("pytorch_grad_cam"), importlib.import_module("pytorch_grad_cam.utils.model_targets")


def warm_up() -> None:
    """Import the CAM library now (the app calls this in a background thread after start-up)."""
    _library()
GRADIENT_FREE = ("eigencam",)

# Hooks live on the model while a call runs; two threads explaining the same model at once would read
# each other's activations, so calls into this package take turns (the app serves one model per request).
HOOK_LOCK = threading.Lock()


def cam_layer_choices(model) -> list[str]:
    """The layers a CAM can be taken at, shallow to deep; the last is the default."""
    return list(model.cam_layers)


def check_one_image(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"expected one image, 1 x 3 x H x W, got shape {tuple(x.shape)}")


def _check(model, x: torch.Tensor, method: str, layer: str | None) -> str:
    if method not in _ENGINES:
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


def cam_batch(model, x: torch.Tensor, targets=None, method: str = "gradcam", layer: str | None = None):
    """CAMs of a batch: (B x H x W float32 maps in [0, 1], B x K class probabilities).

    ``targets``: one class index per image, or None for each image's predicted class. In eval mode
    each image's map equals the map of that image alone; the batch only saves time (tests, profiles).
    """
    layer = _check(model, x, method, layer)
    if targets is not None:
        targets = [int(t) for t in targets]
        if len(targets) != len(x):
            raise ValueError(f"{len(targets)} targets for {len(x)} images")
        bad = [t for t in targets if not 0 <= t < model.num_classes]
        if bad:
            raise ValueError(f"target class(es) {bad} outside 0..{model.num_classes - 1}")
        targets = [_library()[1].ClassifierOutputTarget(t) for t in targets]
    uses_gradients = method not in GRADIENT_FREE
    module = model.get_submodule(layer)
    with HOOK_LOCK, torch.set_grad_enabled(uses_gradients), ExitStack() as cleanup:
        cleanup.callback(model.zero_grad, set_to_none=True)  # backward fills the head's .grad
        if uses_gradients:
            # Registered before the engine's hooks, so they see (and backward stops at) the cut output.
            cleanup.callback(module.register_forward_hook(_cut_graph_below).remove)
        engine = getattr(_library()[0], _ENGINES[method])(model, [module], reshape_transform=model.cam_reshape)
        # Not the library's ``with``: its __exit__ swallows an IndexError and only prints it.
        cleanup.callback(engine.activations_and_grads.release)
        maps = engine(x, targets)
        probs = torch.softmax(engine.outputs.detach().float(), 1).cpu().numpy()
        engine.outputs = None  # the graph that backward(retain_graph=True) kept alive
    return maps, probs


def cam_with_prediction(model, x: torch.Tensor, target: int | None = None, method: str = "gradcam",
                        layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image's CAM (H x W in [0, 1]) and its class probabilities (K,), from one forward pass.

    The app shows the prediction and the explanation together; this gives both for the cost of one.
    """
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
