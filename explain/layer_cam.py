"""Class activation maps read at a layer, with pytorch-grad-cam as the engine.

What this module adds to the library: the layer choices each architecture names (``model.cam_layers``),
MLP-Mixer's token-to-grid reshape (``model.cam_reshape``), fused and test-time-augmented variants, speed and
hygiene.

A CAM object registers hooks on the model and, after ``backward(retain_graph=True)``, keeps the graph in
``.outputs``; so each call builds its own object, then releases its hooks, drops the graph and clears the
parameter gradients the backward pass left, whatever happens. The time goes to the backward pass, which is cut
at the hooked layer (``_cut_graph_below``). Like the library, a call puts the model in eval mode.

Fused methods follow the LayerCAM paper's fusion of shallow and deep layers: the CAM at ``layer`` and every
deeper CAM layer at once (the library's multi-layer mode: the mean of the per-layer maps, each scaled to
[0, 1]), then blurred (``FUSED_BLUR_SIGMA`` pixels). The test-time-augmented variant also averages over the
library's aug_smooth transforms (horizontal flip x input scaled by 0.9, 1, 1.1), run as one batch of six
copies that all explain the original image's target.
"""
from __future__ import annotations

import importlib
from contextlib import ExitStack
from functools import cache

import numpy as np
import torch

from .common import model_lock, unit_range

FUSED_BLUR_SIGMA = 1.5
_FLIPS, _SCALES = (False, True), (0.9, 1.0, 1.1)  # the library's default aug_smooth transforms


@cache
def _library():
    """pytorch_grad_cam, imported on first use: importing it pulls in torchvision and scikit-learn, about
    4.5 s on a 2-core CPU, which would otherwise delay the app's start (``warm_up`` imports it early)."""
    return importlib.import_module("pytorch_grad_cam"), importlib.import_module("pytorch_grad_cam.utils.model_targets")


def warm_up() -> None:
    """Import the CAM library now (the app calls this in a background thread after start-up)."""
    _library()


def _cut_graph_below(module, inputs, output):
    """Make the hooked layer's output a leaf: CAM needs gradients down to this layer and no further.

    The library's backward otherwise runs to the input and computes every weight's gradient; cutting
    here gives identical maps for a half to a third of the time (bench/cam_latency.py).
    """
    return output.detach().requires_grad_(True)


def _augmented(x: torch.Tensor) -> torch.Tensor:
    """The aug_smooth copies of a batch, transform-major: (6 B) x 3 x H x W; copy 1 is the original."""
    return torch.cat([(x.flip(-1) if flip else x) * scale for flip in _FLIPS for scale in _SCALES])


def blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each of B x H x W maps, edges replicated."""
    from scipy.ndimage import gaussian_filter  # loaded with the CAM library already (grad-cam depends on it)

    return gaussian_filter(np.asarray(maps, dtype=np.float32), (0, sigma, sigma), mode="nearest")


def _merge_copies(maps: np.ndarray, outputs: torch.Tensor, batch: int) -> tuple[np.ndarray, torch.Tensor]:
    """The mean map over ``_augmented``'s copies (flipped maps flipped back), and the original's outputs."""
    maps = maps.reshape(len(_FLIPS), len(_SCALES), batch, *maps.shape[1:])
    maps[_FLIPS.index(True)] = maps[_FLIPS.index(True), ..., ::-1].copy()
    original = (_FLIPS.index(False) * len(_SCALES) + _SCALES.index(1.0)) * batch  # unflipped, scale 1
    return maps.mean((0, 1)), outputs[original:original + batch]


def layer_cam_batch(model, x: torch.Tensor, targets, layer: str, engine_name: str, fused: bool = False,
                    augmented: bool = False, uses_gradients: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The library's ``engine_name`` CAM (e.g. "GradCAM") at ``layer`` (with ``fused``, at it and every deeper CAM
    layer; with ``augmented``, averaged over the aug_smooth copies): (B x H x W maps in [0, 1], B x K
    probabilities). ``targets``: checked class indices, or None for each image's predicted class."""
    batch = len(x)
    names = list(model.cam_layers)
    modules = [model.get_submodule(name) for name in (names[names.index(layer):] if fused else [layer])]
    copies = len(_FLIPS) * len(_SCALES) if augmented else 1
    with model_lock(model), torch.set_grad_enabled(uses_gradients), ExitStack() as cleanup:
        cleanup.callback(model.zero_grad, set_to_none=True)  # backward fills the head's .grad
        if targets is None and copies > 1:  # every copy explains the original image's predicted class
            with torch.no_grad():
                targets = model.eval()(x).argmax(1).tolist()
        if uses_gradients:
            # Registered before the engine's hooks, so they see (and backward stops at) the cut output. With
            # several layers the cut is below the shallowest: the deeper ones' gradients flow through it.
            cleanup.callback(modules[0].register_forward_hook(_cut_graph_below).remove)
        engine = getattr(_library()[0], engine_name)(model, modules, reshape_transform=model.cam_reshape)
        # Not the library's ``with``: its __exit__ swallows an IndexError and only prints it.
        cleanup.callback(engine.activations_and_grads.release)
        wrapped = None if targets is None else [_library()[1].ClassifierOutputTarget(t) for t in targets] * copies
        maps = engine(_augmented(x) if copies > 1 else x, wrapped)
        outputs = engine.outputs.detach().float()
        engine.outputs = None  # the graph that backward(retain_graph=True) kept alive
    if copies > 1:
        maps, outputs = _merge_copies(maps, outputs, batch)
    if fused:
        maps = unit_range(blur(maps, FUSED_BLUR_SIGMA))
    return maps, torch.softmax(outputs, 1).cpu().numpy()
