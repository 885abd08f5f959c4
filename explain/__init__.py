"""Explanations for the zoo's models: where a model looked (CAM) and which channels it turned up (SE).

- ``cam(model, x, target=None, method="gradcam", layer=None)``: a class activation map, H x W in
  [0, 1]; ``cam_with_prediction`` also returns the class probabilities of the same forward pass;
  ``cam_batch`` does a batch. ``METHODS`` lists the methods, ``cam_layer_choices(model)`` the layers,
  ``recommended_cam(config)`` the (method, layer) that explains a checkpoint most faithfully, as its
  config.json records it;
  "occlusion" (``explain.occlusion``) blanks windows of the input instead of reading a layer.
- ``faithfulness(model, x, heatmap)``: the deletion curves (the probability drop as more and more of the
  map's hottest pixels are blanked) of the map, of the centre prior, of random maps as smooth as it, and
  of the map from ``randomised_twin(model)``, the same architecture with random weights;
  ``map_verdict(figures)`` turns them into one of four outcomes (``explain.verdict``).
- ``se_excitations``, ``se_weighted_map`` (both at once: ``se_attention``), SE class profiles (``compute_se_profiles``,
  ``save_se_profiles``, ``load_se_profiles``) and their plots, for SENet and EfficientNet.
- ``overlay(image, heatmap)``: a heatmap blended onto the original upload.

Every call hooks the model only while it runs, under ``HOOK_LOCK``; a thread that runs its own forward
pass of a model while another explains it should hold that lock too (or use ``cam_with_prediction``).
"""
from .cam import (FUSED, GRADIENT_FREE, HOOK_LOCK, LAYER_FREE, METHODS, cam, cam_batch, cam_layer_choices, cam_with_prediction,
                  recommended_cam, warm_up)
from .faithfulness import deletion_curves, faithfulness, randomised, randomised_twin
from .verdict import MapVerdict, Outcome, map_verdict
from .plots import SEExcitationPlot, overlay, plot_class_specificity, plot_se_excitations
from .se import (PROFILES_NAME, class_specificity, compute_se_profiles, has_se, load_se_profiles,
                 save_se_profiles, se_attention, se_excitations, se_weighted_map)

__all__ = ["METHODS", "GRADIENT_FREE", "FUSED", "LAYER_FREE", "recommended_cam", "HOOK_LOCK", "cam", "cam_batch",
           "cam_with_prediction", "cam_layer_choices",
           "warm_up", "faithfulness", "deletion_curves", "map_verdict", "MapVerdict", "Outcome", "randomised", "randomised_twin", "overlay", "SEExcitationPlot", "plot_se_excitations",
           "plot_class_specificity",
           "se_attention", "se_excitations", "se_weighted_map", "has_se", "compute_se_profiles", "save_se_profiles",
           "load_se_profiles", "class_specificity", "PROFILES_NAME"]
