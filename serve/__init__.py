"""The serving layer of the app: checkpoints loaded and cached, predictions, explanations, the zoo's tables.

No Gradio here: ``app.py`` lays out what ``ZooService`` returns, and tests call it directly. Image
decoding and the model's input live in ``preprocess``, shared with training.
"""
from preprocess import MAX_PIXELS, MAX_SIDE, MAX_UPLOAD_BYTES, ImageDecodeError, load_image, model_view, to_tensor

from .controls import corruption_controls
from .errors import RequestError
from . import ui
from .inside import InsideService
from .ood import verdict
from .predict import CompareRow, Prediction, compare_all, predict, run_model
from .service import NO_CORRUPTION, PREDICTED, RECOMMENDED, Explanation, Panel, ZooService, default_has_se, max_cam_depth
from .store import LoadedModel, ModelStore, ModelUnavailable, pick_device
from .uploads import decode, upload_source
from .zoo import ZOO_HEADERS, architecture_card, architecture_choices, best_architecture, served_accuracy

__all__ = ["ImageDecodeError", "load_image", "model_view", "to_tensor", "MAX_PIXELS", "MAX_SIDE", "MAX_UPLOAD_BYTES",
           "RequestError", "InsideService", "corruption_controls", "NO_CORRUPTION", "verdict", "CompareRow", "Prediction",
           "compare_all", "predict", "run_model",
           "PREDICTED", "RECOMMENDED", "Explanation", "Panel", "ZooService", "default_has_se", "max_cam_depth",
           "LoadedModel", "ModelStore", "ModelUnavailable", "pick_device", "decode", "upload_source", "ZOO_HEADERS",
           "architecture_card", "architecture_choices", "best_architecture", "served_accuracy"]
