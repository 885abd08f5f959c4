"""Predictions: top-k with probabilities, the out-of-distribution check, and all architectures compared.

Pure functions over a ``ModelStore`` and a decoded image; the app only lays out what they return.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from architectures import list_models
from preprocess import served_probs, to_tensor

from .ood import ood_check
from .store import LoadedModel, ModelStore, ModelUnavailable, Unavailable
from .zoo import display_name


@dataclass
class Prediction:
    arch: str
    display_name: str
    class_names: list[str]
    probs: np.ndarray                 # softmax over all classes, averaged over the TTA views; float64
    top: list[tuple[str, float]]      # the k most likely (class, probability), best first
    ood: dict                         # serve.ood.ood_check(...)
    latency_ms: float                 # preprocessing + forward pass, on the serving device
    x: torch.Tensor = field(repr=False)  # the normalised input, for explanations

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def confidence(self) -> float:
        return self.top[0][1]

    @property
    def index(self) -> int:
        return int(self.probs.argmax())

    def label_dict(self) -> dict[str, float]:
        """Every class and its probability, for ``gr.Label`` (which shows the top ones)."""
        return {name: float(p) for name, p in zip(self.class_names, self.probs)}


def served_temperature(config: dict, weights_sha256: str | None) -> float:
    """The checkpoint's fitted temperature (config.json's ``temperature``, written by ``tools.robustness`` when
    it lowers the calibration error); 1 when there is none or it was fitted on other weights."""
    entry = config.get("temperature")
    if not isinstance(entry, dict) or (weights_sha256 and entry.get("weights_sha256") != weights_sha256):
        return 1.0
    return float(entry["value"])


def run_model(loaded: LoadedModel, image: Image.Image, k: int = 5, ood_entry: dict | None = None) -> Prediction:
    """Classify one decoded image with a loaded model; holds the model's lock while it runs.

    The probabilities average shifted and mirrored copies of the image (``preprocess.served_probs``,
    as the validation figure ``val_accuracy_tta`` is measured), at the checkpoint's fitted temperature.
    ``ood_entry`` is the checkpoint's out-of-distribution threshold (``ModelStore.ood_entry``); without
    one the check says it is off.
    """
    config = loaded.config
    start = time.perf_counter()
    x = to_tensor(image, config, next(loaded.model.parameters()).device)
    temperature = served_temperature(config, loaded.weights_sha256)
    with loaded.lock, torch.inference_mode():
        probs = served_probs(loaded.model, x, temperature)[0].cpu().numpy().astype(np.float64)
    latency_ms = (time.perf_counter() - start) * 1000
    names = config["class_names"]
    order = np.argsort(-probs)[:k]
    top = [(names[i], float(probs[i])) for i in order]
    return Prediction(loaded.name, display_name(loaded.name), names, probs, top,
                      ood_check(probs, ood_entry, loaded.weights_sha256), latency_ms,
                      x.detach())


def predict(store: ModelStore, arch: str, image: Image.Image, k: int = 5) -> Prediction:
    """Top-``k`` prediction of architecture ``arch`` (raises ``ModelUnavailable`` or ``ValueError``)."""
    return run_model(store.get(arch), image, k, store.ood_entry(arch))


@dataclass
class CompareRow:
    arch: str
    display_name: str
    label: str | None
    confidence: float | None
    latency_ms: float | None
    agrees_with_majority: bool | None
    agreement: float | None           # share of the other available models with the same top-1
    error: str | None = None          # why there is no prediction (``ModelUnavailable``'s message)
    unavailable: Unavailable | None = None  # ... and its reason, for whatever words it differently
    prediction: Prediction | None = field(default=None, repr=False)


def compare_all(store: ModelStore, image: Image.Image, names: list[str] | None = None,
                progress=None, predict_one=None) -> tuple[list[CompareRow], str | None]:
    """Every architecture on one image; returns the rows (zoo order) and the majority label.

    An architecture without a usable checkpoint gets a row with ``error`` set; it does not stop the rest.
    ``progress(i, n, name)`` is called before each model when given. ``predict_one(name)`` replaces ``predict``
    (the app's goes through its caches, and shows each model its own attacked file when asked).
    """
    names = list(names) if names is not None else list_models()
    predict_one = predict_one or (lambda name: predict(store, name, image))
    rows: list[CompareRow] = []
    for i, name in enumerate(names):
        if progress is not None:
            progress(i, len(names), name)
        try:
            prediction = predict_one(name)
        except ModelUnavailable as error:
            rows.append(CompareRow(name, name, None, None, None, None, None, error=str(error),
                                   unavailable=error.reason))
            continue
        rows.append(CompareRow(name, prediction.display_name, prediction.label, prediction.confidence,
                               prediction.latency_ms, None, None, prediction=prediction))
    labels = [row.label for row in rows if row.label is not None]
    majority = None
    if labels:
        counts = Counter(labels)
        best = max(counts.values())
        # A tie goes to the label with the highest summed confidence among the tied ones.
        tied = [label for label, count in counts.items() if count == best]
        majority = max(tied, key=lambda label: sum(r.confidence for r in rows if r.label == label))
    for row in rows:
        if row.label is None:
            continue
        row.agrees_with_majority = row.label == majority
        others = [r.label for r in rows if r.label is not None and r is not row]
        row.agreement = sum(label == row.label for label in others) / len(others) if others else None
    return rows, majority
