"""Explanations for the zoo's models: where a model looked (maps) and which channels it turned up (SE).

- ``cam(model, x, target=None, method="gradcam", layer=None)``: a map, H x W in [0, 1];
  ``cam_with_prediction`` also returns the class probabilities of the same forward pass; ``cam_batch`` does a
  batch. ``methods.TABLE`` is the table of methods (``METHODS`` their names), ``cam_layer_choices(model)`` the
  layers, ``recommended_cam(config)`` a checkpoint's default (method, layer).
- ``choose(model, x, candidate_maps, targets)``: the "chosen" method's per-image pick among candidate maps.
- ``faithfulness(model, x, heatmap, target, random_weights_heatmap=...)``: the held-out curves of a map and of
  its references (random maps as smooth as it, the centre prior, the map from ``randomised_twin(model)``);
  ``map_verdict(figures)`` turns them into one of four outcomes (``explain.verdict``).
- ``se_excitations``, ``se_weighted_map`` (both at once: ``se_attention``), SE class profiles and their plots.
- ``overlay(image, heatmap)``: a heatmap blended onto the original upload.

Imports run one way: ``common`` (a leaf) <- ``curves`` <- the methods' modules <- ``choice`` <- ``methods`` <-
``cam``; ``faithfulness`` and ``verdict`` read curves and never make maps. A thread that runs its own forward
pass of a model while another may explain it holds ``model_lock(model)``.
"""
from . import methods
from .cam import TABLE_VIEWS, cam, cam_batch, cam_layer_choices, cam_with_prediction, recommended_cam, warm_up
from .choice import CHOSEN_FROM, choose
from .common import model_lock, unit_range
from .faithfulness import evidence, faithfulness, randomised, randomised_twin
from .plots import SEExcitationPlot, overlay, plot_class_specificity, plot_se_excitations
from .se import (
    PROFILES_NAME,
    class_specificity,
    compute_se_profiles,
    has_se,
    load_se_profiles,
    save_se_profiles,
    se_attention,
    se_excitations,
    se_weighted_map,
)
from .verdict import MapVerdict, Outcome, map_verdict

__all__ = ["methods", "METHODS", "GRADIENT_FREE", "FUSED", "LAYER_FREE", "recommended_cam", "model_lock", "unit_range",
           "cam", "cam_batch", "cam_with_prediction", "cam_layer_choices", "warm_up", "choose", "CHOSEN_FROM",
           "faithfulness", "evidence", "map_verdict", "MapVerdict", "Outcome", "randomised", "randomised_twin",
           "overlay", "SEExcitationPlot", "plot_se_excitations", "plot_class_specificity", "se_attention",
           "se_excitations", "se_weighted_map", "has_se", "compute_se_profiles", "save_se_profiles",
           "load_se_profiles", "class_specificity", "PROFILES_NAME"]


def __getattr__(name: str):
    """``METHODS``, ``LAYER_FREE``, ``FUSED`` and ``GRADIENT_FREE``: views of the table of methods, read afresh."""
    if name in TABLE_VIEWS:
        return TABLE_VIEWS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
