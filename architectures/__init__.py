"""The model zoo: eleven classic image classifiers, CIFAR-native (3 x 32 x 32 input).

Public surface: ``list_models()``, ``create_model(name, num_classes=10, **kwargs)`` and
``load_pretrained(path_or_repo_id)``; ``save_pretrained`` writes the checkpoint format they read.
"""
from ._registry import check_name, create_model, default_args, list_models, model_class, register_model

# Importing a module registers its architecture; the order here is the zoo's order (roughly history).
from . import basic_convnet, alexnet, vgg, nin, googlenet, bn_convnet, resnet, densenet, senet  # noqa: E402,F401
from . import efficientnet, mlp_mixer  # noqa: E402,F401
from .checkpoint import CheckpointError, load_config, load_pretrained, save_pretrained  # noqa: E402

__all__ = ["list_models", "create_model", "register_model", "check_name", "default_args",
           "model_class", "load_pretrained", "save_pretrained", "load_config", "CheckpointError"]
