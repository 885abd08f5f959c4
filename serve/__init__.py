"""The serving layer of the app: checkpoints loaded and cached, predictions, explanations, the zoo's tables.

``ZooService`` computes, caches and returns data; ``wording`` puts it into sentences, headers and colours;
``app.py`` lays it out, and the tests call the service directly. Importing this package does not import
Gradio: its only Gradio pieces (``serve/controls.py``: the controls of Classify and Compare, and the dialog for a
``RequestError``) load when first asked for. Image decoding and the model's input live in
``preprocess``, shared with training.
"""
from preprocess import (
    CIFAR10_CLASSES,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_UPLOAD_BYTES,
    ImageDecodeError,
    load_image,
    model_view,
    to_tensor,
)

from . import wording, zerogpu
from .attacks import DEFAULT_EPSILON, NO_ATTACK, UNTARGETED, AttackRequest, attack_request
from .errors import RequestError, known_architecture
from .inside import InsideService
from .ood import ood_check
from .predict import CompareRow, Prediction, compare_all, predict, run_model
from .service import (
    NO_CORRUPTION,
    PREDICTED,
    RECOMMENDED,
    AttackShown,
    Explanation,
    Panel,
    ZooService,
    default_has_se,
    explanation_methods,
    max_cam_depth,
    warm_up_explanations,
)
from .store import LoadedModel, ModelStore, ModelUnavailable, Unavailable, pick_device
from .uploads import decode, upload_source
from .zoo import ZOO_HEADERS, architecture_card, architecture_choices, best_architecture, served_accuracy

# In serve/controls.py, imported on first use.
_GRADIO_PIECES = ("corruption_controls", "attack_controls", "attack_results", "titled_picture", "shown_as_dialog")

__all__ = ["ImageDecodeError", "load_image", "model_view", "to_tensor", "CIFAR10_CLASSES", "MAX_PIXELS", "MAX_SIDE",
           "MAX_UPLOAD_BYTES", "RequestError", "known_architecture", "InsideService", "NO_CORRUPTION", "ood_check",
           "DEFAULT_EPSILON", "NO_ATTACK", "UNTARGETED", "AttackRequest", "attack_request", "AttackShown",
           "CompareRow", "Prediction", "compare_all", "predict", "run_model", "PREDICTED", "RECOMMENDED",
           "Explanation", "Panel", "ZooService", "default_has_se", "max_cam_depth", "explanation_methods",
           "warm_up_explanations", "LoadedModel", "ModelStore",
           "ModelUnavailable", "Unavailable", "pick_device", "decode", "upload_source", "ZOO_HEADERS",
           "architecture_card", "architecture_choices", "best_architecture", "served_accuracy", "wording", "zerogpu",
           *_GRADIO_PIECES]


def __getattr__(name: str):
    """The Gradio pieces (``_GRADIO_PIECES``): Gradio is imported only when they are used."""
    if name in _GRADIO_PIECES:
        from . import controls

        return getattr(controls, name)
    raise AttributeError(f"module 'serve' has no attribute {name!r}")
