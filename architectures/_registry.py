"""The model registry: ``register_model``, ``create_model`` and ``list_models`` are its whole surface.

A registered builder is a ``ZooModel`` subclass (or any callable returning one) whose keyword arguments
are its architecture settings. ``create_model`` records the arguments it was built with on the model
(``model.arch_args``), so a checkpoint can be rebuilt from its config without guessing defaults.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator: register ``builder`` under ``name``; a duplicate name is a programming error."""

    def wrap(builder):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = builder
        builder.registry_name = name
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of every registered architecture, in registration order (the order of the zoo's history)."""
    return list(_MODELS)


def check_name(name: object) -> str:
    """Return ``name`` if it is a registered architecture, else raise ``ValueError`` listing the known ones.

    Every outside string that names an architecture (command line, config file, app) goes through here,
    so a name is never used to build a path or import anything before it is known to be one of ours.
    """
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(_MODELS)}")
    return name


def model_class(name: str):
    """The registered builder of ``name`` (its class attributes: ``display_name``, ``key_idea``, ``paper``)."""
    return _MODELS[check_name(name)]


def default_args(name: str) -> dict:
    """The builder's keyword defaults (everything but ``num_classes``)."""
    signature = inspect.signature(_MODELS[check_name(name)])
    return {
        key: param.default
        for key, param in signature.parameters.items()
        if key != "num_classes" and param.default is not inspect.Parameter.empty
    }


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build architecture ``name`` with freshly initialised weights."""
    builder = _MODELS[check_name(name)]
    unknown = set(kwargs) - set(default_args(name))
    if unknown:
        raise ValueError(f"{name} takes no argument(s) {sorted(unknown)}; it takes {sorted(default_args(name))}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    model = builder(num_classes=num_classes, **kwargs)
    model.arch = name
    model.arch_args = {**default_args(name), **kwargs}
    model.num_classes = num_classes
    return model
