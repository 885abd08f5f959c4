"""The inference layer of the app: decode uploads safely, load checkpoints, predict, compare.

No Gradio here: ``app.py`` lays out what these pure functions return, and tests call them directly.
"""
from .images import MAX_PIXELS, MAX_SIDE, MAX_UPLOAD_BYTES, ImageDecodeError, load_image, model_view, to_tensor
from .ood import load_thresholds, verdict
from .predict import CompareRow, Prediction, compare_all, predict, run_model, served_class
from .store import LoadedModel, ModelStore, ModelUnavailable, pick_device

__all__ = ["ImageDecodeError", "load_image", "model_view", "to_tensor", "MAX_PIXELS", "MAX_SIDE", "MAX_UPLOAD_BYTES",
           "ModelStore", "ModelUnavailable", "LoadedModel", "pick_device", "Prediction", "CompareRow", "predict",
           "run_model", "served_class", "compare_all", "load_thresholds", "verdict"]
