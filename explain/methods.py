"""The table of explanation methods: every method's name, kind, needs and function, in one place that every
caller reads (``explain.cam`` dispatches through it; the app lists it; the tests parametrise over it).

Adding a method is one ``register`` call with a function ``(model, x, targets, layer) -> (B x H x W maps in
[0, 1], B x K probabilities)``; ``tests/test_new_method.py`` shows that nothing else needs to change.

Kinds:
- ``LAYER_CAM``: read at one layer (pytorch-grad-cam); ``layer`` picks it.
- ``FUSED``: read at ``layer`` and every deeper CAM layer at once.
- ``INPUT``: computed on the input (occlusion, Captum's attributions, RISE); no layer.
- ``CHOSEN``: per image, the best of several others by the choice curve (``explain.choice``); no layer.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from . import choice, layer_cam, occlusion, perturbation


class Kind(str, Enum):
    LAYER_CAM = "layer CAM"
    FUSED = "fused"
    INPUT = "input attribution"
    CHOSEN = "chosen"


@dataclass(frozen=True)
class Method:
    name: str
    kind: Kind
    function: Callable          # (model, x, targets, layer) -> (maps, probabilities)
    needs_gradients: bool = True
    uses_target: bool = True    # False: the map is the same whatever class is asked (EigenCAM)
    summary: str = ""           # one line for the app's menu and the docs

    @property
    def takes_layer(self) -> bool:
        return self.kind in (Kind.LAYER_CAM, Kind.FUSED)


TABLE: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the table; a name already there is an error."""
    if method.name in TABLE:
        raise ValueError(f"an explanation method named {method.name!r} is already registered")
    TABLE[method.name] = method
    return method


def get(name: str) -> Method:
    """The method called ``name``; ValueError naming the known ones otherwise."""
    try:
        return TABLE[name]
    except KeyError:
        raise ValueError(f"unknown CAM method {name!r}; known: {', '.join(TABLE)}") from None


def names(*kinds: Kind) -> tuple[str, ...]:
    """The registered names, in registration order; only those of ``kinds`` where given."""
    return tuple(name for name, method in TABLE.items() if not kinds or method.kind in kinds)


def _library_cam(engine: str, fused: bool = False, augmented: bool = False, uses_gradients: bool = True):
    def run(model, x, targets, layer):
        return layer_cam.layer_cam_batch(model, x, targets, layer, engine, fused, augmented, uses_gradients)
    return run


def _input(function):
    """An input method's (model, x, targets) function in the table's (model, x, targets, layer) shape."""
    return lambda model, x, targets, layer: function(model, x, targets)


for _method in (
    Method("gradcam", Kind.LAYER_CAM, _library_cam("GradCAM"),
           summary="Grad-CAM: channels weighted by their mean gradient"),
    Method("gradcam++", Kind.LAYER_CAM, _library_cam("GradCAMPlusPlus"), summary="Grad-CAM++: higher-order weights"),
    Method("layercam", Kind.LAYER_CAM, _library_cam("LayerCAM"), summary="LayerCAM: positive gradients per pixel"),
    Method("eigencam", Kind.LAYER_CAM, _library_cam("EigenCAM", uses_gradients=False), needs_gradients=False,
           uses_target=False, summary="EigenCAM: the activations' first principal component, class-agnostic"),
    Method("hirescam", Kind.LAYER_CAM, _library_cam("HiResCAM"),
           summary="HiResCAM: gradients times activations, element-wise"),
    Method("scorecam", Kind.LAYER_CAM, _library_cam("ScoreCAM", uses_gradients=False), needs_gradients=False,
           summary="Score-CAM: each channel weighed by what masking the input with it does"),
    Method("gradcam++-fused", Kind.FUSED, _library_cam("GradCAMPlusPlus", fused=True),
           summary="Grad-CAM++ at this layer and every deeper one, fused and blurred"),
    Method("layercam-fused-tta", Kind.FUSED, _library_cam("LayerCAM", fused=True, augmented=True),
           summary="LayerCAM fused, averaged over flipped and rescaled copies"),
    Method("occlusion", Kind.INPUT, _input(occlusion.occlusion_batch), needs_gradients=False,
           summary="occlusion: the probability's fall when 14-pixel windows are blanked"),
    Method("input-x-gradient", Kind.INPUT, _input(perturbation.input_x_gradient_batch),
           summary="input x gradient (Captum), blurred"),
    Method("integrated-gradients", Kind.INPUT, _input(perturbation.integrated_gradients_batch),
           summary="integrated gradients from the blank image (Captum), blurred"),
    Method("occlusion-fine", Kind.INPUT, _input(perturbation.occlusion_fine_batch), needs_gradients=False,
           summary="Captum's occlusion with 8-pixel windows"),
    Method("rise", Kind.INPUT, _input(perturbation.rise_batch), needs_gradients=False,
           summary="RISE: the mean probability over random masks that keep each pixel"),
    Method("chosen", Kind.CHOSEN, _input(choice.chosen_batch),
           summary=f"per image, the best of {len(choice.CHOSEN_FROM)} maps by a curve the verdict does not read"),
):
    register(_method)
