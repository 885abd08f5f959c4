"""The work behind every event of the app, as plain functions of an upload and an architecture name.

``ZooService`` holds the model store and what one click shares between its events: a Classify click runs
/predict, then /describe, then /explain on the same upload, and the served (test-time augmented)
prediction is computed once, by the first, and reused by the others. Maps and their checks are computed once
per upload and kept. Every sentence, header and colour of what it returns comes from ``serve.wording``.
Errors a user can fix raise ``RequestError``; ``app.py`` shows them. No Gradio here.

Each model runs under its own lock (``LoadedModel.lock``, explain's ``model_lock``), so requests for different
architectures run side by side; a map's check takes the model's lock, then its random-weights twin's.
Compare's steps live in ``serve.compare``, the SE plots' drawing in ``serve.se_plots``, the attack in
``serve.attacks``; this class holds the caches they share.
"""
from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import explain
from architectures import create_model, list_models
from explain.choice import chosen_batch
from explain.common import model_lock
from explain.diagram import diagram_for
from explain.verdict import map_verdict
from preprocess import model_view
from robustness.corruptions import NONE as NO_CORRUPTION
from robustness.corruptions import check as check_corruption
from robustness.corruptions import corrupt_image

from . import pictures, se_plots, wording
from .attacks import (DEFAULT_EPSILON, NO_ATTACK, NOTHING, UNTARGETED, AttackRequest, attack_request, attack_upload,
                      perturbation_picture, saved_png, smallest_flipping_epsilon)
from .errors import RequestError, known_architecture
from .compare import compare_steps
from .predict import Prediction, run_model
from .recent import RecentlyUsed
from .store import LoadedModel, ModelStore, ModelUnavailable
from .uploads import decode
from .zoo import ZooTable, architecture_card, checkpoint_picture, robustness_picture

PREDICTED = "predicted"      # the explained class: the one the top-5 shows
RECOMMENDED = "recommended"  # the CAM method: each checkpoint's most faithful one (its config's "cam")
PREDICTION_CACHE = 64  # Compare alone keeps eleven, twenty-two with an attack
CHECKED_MAP_CACHE = 256  # maps with their verdicts, a few KB each (ZooService.checked_map)
CORRUPTION_SIZE = 32  # "corrupt this image" works on the 32 x 32 view: CIFAR-10-C's parameters are for that size


def corrupted_upload(pil: Image.Image, corruption=NO_CORRUPTION, severity=3) -> Image.Image:
    """The upload as the model will see it under ``corruption`` at ``severity`` (1-5): its 32 x 32 square
    view corrupted with a fixed seed; unchanged for "none". A bad choice raises ``RequestError``."""
    if corruption in (None, "", NO_CORRUPTION):
        return pil
    try:
        level = check_corruption(corruption, severity)
    except ValueError as error:
        raise RequestError(str(error), title="Unknown corruption") from None
    return corrupt_image(Image.fromarray(model_view(pil, {"image_size": CORRUPTION_SIZE})), corruption, level)


@cache
def _default_model_facts(name: str) -> tuple[tuple[str, ...], bool]:
    """CAM layers and whether it has SE blocks, of ``name`` built once with its default arguments."""
    model = create_model(name)
    return tuple(explain.cam_layer_choices(model)), explain.has_se(model)


def default_cam_layers(name: str) -> tuple[str, ...]:
    return _default_model_facts(name)[0]


def default_has_se(name: str) -> bool:
    return _default_model_facts(name)[1]


def max_cam_depth() -> int:
    """The deepest layer index any architecture has (the layer slider's range before one is chosen)."""
    return max(len(default_cam_layers(name)) for name in list_models())


def explanation_methods() -> tuple[str, ...]:
    """The explanation methods a visitor may pick besides RECOMMENDED, in the order of explain's table."""
    return explain.METHODS


def warm_up_explanations() -> None:
    """Import the CAM library now (the app does it once it answers, so that the first map does not wait)."""
    explain.warm_up()


@dataclass
class Panel:
    """What depends on the architecture alone."""
    card: str
    depth: int                        # CAM layers of the loaded model (the slider's maximum and value)
    class_specificity: Image.Image | None
    has_se: bool
    diagram: Image.Image              # the architecture's block diagram, traced from the model (cached)


@dataclass
class Explanation:
    overlay: Image.Image
    se_plot: Image.Image | None
    faithfulness: pd.DataFrame
    note: str
    se_map: Image.Image | None

    def as_tuple(self) -> tuple:
        """The outputs in app.py's order. No bars yet (an empty frame) go out as None: Gradio's bar plot, once
        drawn from no rows, keeps that empty encoding and never shows the bars that follow."""
        faithfulness = None if self.faithfulness.empty else self.faithfulness
        return self.overlay, self.se_plot, faithfulness, self.note, self.se_map


@dataclass
class AttackShown:
    """An attack as Classify shows it beside the new top-5 and map."""
    perturbation: Image.Image   # attacked - original, amplified by ``scale`` around grey
    scale: float
    note: str                   # markdown: what it did, and the smallest budget that flips this image
    png_path: str               # the attacked 32 x 32 view as an 8-bit PNG file
    fooled: bool
    smallest_epsilon: float | None

    def as_tuple(self) -> tuple:
        """Classify's attack panel: the perturbation, the note, the file."""
        return self.perturbation, self.note, self.png_path


@dataclass
class CheckedMap:
    """One explanation of one upload by one checkpoint (method, layer, class) and, once its check has run, the
    curves its verdict is read from. Kept (``ZooService.checked_map``) so that what only redraws it
    (another opacity, a return to the architecture, Compare after Classify or the other way) costs no
    forward pass."""
    heatmap: np.ndarray
    chosen: str | None      # the candidate the "chosen" method took for this image, else None
    ms: float               # what computing the map took
    figures: dict | None = None


def _prediction_key(source_key: tuple, corruption, severity, loaded: LoadedModel,
                    request: AttackRequest = NOTHING) -> tuple:
    """What a served prediction, and every map of it, is kept under: the upload's content (``decode``'s key),
    the corruption applied to it, the checkpoint and the attack on it."""
    shown = (None, None) if corruption in (None, "", NO_CORRUPTION) else (corruption, int(severity))
    return source_key, shown, loaded.name, loaded.weights_sha256, request.key


class ZooService:
    def __init__(self, store: ModelStore):
        self.store = store
        self.zoo = ZooTable(store)
        self._predictions = RecentlyUsed(PREDICTION_CACHE)  # (upload, corruption, checkpoint) -> Prediction
        self._checked = RecentlyUsed(CHECKED_MAP_CACHE)      # ... + (method, layer, class) -> CheckedMap
        self._attacks = RecentlyUsed(PREDICTION_CACHE)       # attacked prediction's key -> ImageAttack
        self._fragility = RecentlyUsed(PREDICTION_CACHE)     # ... -> the smallest budget that flips it

    # -- inputs ----------------------------------------------------------------------------------------
    def model(self, architecture) -> LoadedModel:
        """The loaded model of ``architecture``; ``RequestError`` for an unknown name or a missing checkpoint."""
        try:
            return self.store.get(known_architecture(architecture))
        except ModelUnavailable as error:
            raise RequestError(str(error), title="Checkpoint not available") from None

    def served_prediction(self, image, architecture, corruption=NO_CORRUPTION, severity=3, attack=NO_ATTACK,
                          epsilon=DEFAULT_EPSILON,
                          attack_target=UNTARGETED) -> tuple[Image.Image, LoadedModel, Prediction]:
        """The upload (corrupted, then attacked, when asked), its model and the prediction the top-5 shows:
        computed once per upload, corruption, attack, architecture and weights, then reused by the click's other
        events (and by every change of explanation setting). Attacked, the upload is the 8-bit file of the
        attacked 32 x 32 view."""
        return self._served(image, architecture, corruption, severity, attack, epsilon, attack_target)[:3]

    @staticmethod
    def upload(image, corruption=NO_CORRUPTION, severity=3) -> tuple[Image.Image, tuple]:
        """The upload decoded and corrupted when asked, and its content's key (``decode``'s)."""
        pil, source_key = decode(image)
        return corrupted_upload(pil, corruption, severity), source_key

    def _served(self, image, architecture, corruption=NO_CORRUPTION, severity=3, attack=NO_ATTACK,
                epsilon=DEFAULT_EPSILON,
                attack_target=UNTARGETED) -> tuple[Image.Image, LoadedModel, Prediction, tuple]:
        """``served_prediction`` and its cache key (upload, corruption, architecture, weights, attack)."""
        pil, source_key = self.upload(image, corruption, severity)
        loaded = self.model(architecture)
        request = attack_request(attack, epsilon, attack_target, loaded.config["class_names"])
        shown, prediction, key = self._served_by(loaded, pil, source_key, corruption, severity, request)
        return shown, loaded, prediction, key

    def _served_by(self, loaded: LoadedModel, pil: Image.Image, source_key: tuple, corruption, severity,
                   request: AttackRequest = NOTHING) -> tuple[Image.Image, Prediction, tuple]:
        """The image ``loaded`` is shown (``pil``, or its attacked file), its served prediction and their key."""
        key = _prediction_key(source_key, corruption, severity, loaded)
        prediction = self._prediction(loaded, pil, key)
        if not request.active:
            return pil, prediction, key
        attacked_key = _prediction_key(source_key, corruption, severity, loaded, request)
        result = self._attacks.get(attacked_key)
        if result is None:
            result = attack_upload(loaded, pil, request, probs_before=prediction.probs)
            self._attacks.put(attacked_key, result)
        attacked = Image.fromarray(result.attacked)
        return attacked, self._prediction(loaded, attacked, attacked_key), attacked_key

    def _prediction(self, loaded: LoadedModel, pil: Image.Image, key: tuple) -> Prediction:
        prediction = self._predictions.get(key)
        if prediction is None:
            prediction = run_model(loaded, pil, ood_entry=self.store.ood_entry(loaded.name))
            self._predictions.put(key, prediction)
        return prediction

    def attack(self, image, architecture, corruption=NO_CORRUPTION, severity=3, attack=NO_ATTACK,
               epsilon=DEFAULT_EPSILON, attack_target=UNTARGETED) -> AttackShown | None:
        """What Classify shows of an attack beside its new top-5 and map: the perturbation made visible, what
        it did in words (with the smallest budget that flips this image) and the attacked file to download.
        None without an image or an attack."""
        if image is None or attack in (None, "", NO_ATTACK):
            attack_request(attack, epsilon, attack_target)  # a mistyped setting is still an error
            return None
        _, loaded, _, key = self._served(image, architecture, corruption, severity, attack, epsilon, attack_target)
        names = loaded.config["class_names"]
        request = attack_request(attack, epsilon, attack_target, names)
        original = self._served(image, architecture, corruption, severity)[0]
        # Evicted by other requests since _served made it: made again, seeded, so the same file.
        result = self._attacks.get(key) or attack_upload(loaded, original, request)
        fragility_key = key[:-1] + (("smallest", request.target),)  # one search per upload, model and target
        smallest = self._fragility.get(fragility_key, False)
        if smallest is False:
            smallest = smallest_flipping_epsilon(loaded, original, request)
            self._fragility.put(fragility_key, smallest)
        picture, scale = perturbation_picture(result)
        note = wording.attack_note(result, names, scale, smallest)
        return AttackShown(picture, scale, note, saved_png(result, loaded.name), result.fooled, smallest)

    # -- Maps and their checks, computed once ---------------------------------------------------------
    def checked_map(self, loaded: LoadedModel, prediction_key: tuple, x, explained: int, method: str,
                    layer: str) -> CheckedMap:
        """The map of class ``explained`` by ``method`` at ``layer`` for the prediction ``prediction_key``
        (``_served``'s key) names: from the cache, or computed (its check not yet run) and kept."""
        key = prediction_key + (method, layer, explained)
        entry = self._checked.get(key)
        if entry is None:
            with loaded.lock:
                entry = self._checked.get(key)  # another request (Compare beside Classify) may have just made it
                if entry is None:
                    start = time.perf_counter()
                    heatmap, chosen = self._map(loaded.model, x, explained, method, layer)
                    entry = CheckedMap(heatmap, chosen, (time.perf_counter() - start) * 1000)
                    self._checked.put(key, entry)
        return entry

    def check(self, loaded: LoadedModel, entry: CheckedMap, x, explained: int, method: str, layer: str) -> dict:
        """``entry``'s held-out curves (``explain.faithfulness``), measured once: against random maps, the centre
        and the same method's map from random weights (chosen in the same way, on the random network's own
        curves), which shows what the map's shape and the image's edges alone cost."""
        with loaded.lock:  # checked under the lock: a request that waited for it finds the figures made
            if entry.figures is None:
                twin = self.store.random_twin(loaded)
                with model_lock(twin):  # the model's lock, then its twin's: the one order, so no deadlock
                    random_heatmap, _ = self._map(twin, x, explained, method, layer)
                entry.figures = explain.faithfulness(loaded.model, x, entry.heatmap, explained,
                                                     random_weights_heatmap=random_heatmap)
        return entry.figures

    # -- Classify --------------------------------------------------------------------------------------
    def predict(self, image, architecture, corruption=NO_CORRUPTION, severity=3, attack=NO_ATTACK,
                epsilon=DEFAULT_EPSILON, attack_target=UNTARGETED) -> dict[str, float] | None:
        """Every class and its probability, for the top-5 label; None when the image was cleared."""
        if image is None:
            return None
        return self.served_prediction(image, architecture, corruption, severity, attack, epsilon,
                                      attack_target)[2].label_dict()

    def describe(self, image, architecture, corruption=NO_CORRUPTION, severity=3,
                 attack=NO_ATTACK, epsilon=DEFAULT_EPSILON, attack_target=UNTARGETED) -> tuple[str, Image.Image | None]:
        """The out-of-distribution note beside the label, and the model's own view of the image."""
        if image is None:
            return "", None
        pil, loaded, prediction = self.served_prediction(image, architecture, corruption, severity, attack, epsilon,
                                                         attack_target)
        view = Image.fromarray(model_view(pil, loaded.config))
        # Blown up with nearest-neighbour so its pixels stay visible.
        return wording.ood_note(prediction), pictures.bounded(view, resample=Image.Resampling.NEAREST)

    def panel(self, architecture) -> Panel:
        """The card, the layer count, the SE class-specificity plot and the diagram of ``architecture``."""
        name = known_architecture(architecture)
        config = self.store.config(name)
        depth, specificity = len(default_cam_layers(name)), None
        if config is not None:
            try:
                depth = len(explain.cam_layer_choices(self.store.get(name).model))
            except ModelUnavailable:
                pass
            version = se_plots.profiles_version(config["_folder"])
            specificity = None if version is None else se_plots.class_specificity_plot(*version)
        return Panel(architecture_card(self.store, name), depth, specificity, default_has_se(name), self.diagram(name))

    def diagram(self, name: str) -> Image.Image:
        """The block diagram of ``name`` as its checkpoint builds it (default settings without one); drawn once."""
        config = self.store.config(name) or {}
        return diagram_for(name, json.dumps(config.get("arch_args", {}), sort_keys=True),
                           len(config.get("class_names", [])) or 10)

    def explain(self, image, architecture, method=RECOMMENDED, layer=None, target=PREDICTED,
                opacity=0.5, corruption=NO_CORRUPTION, severity=3, attack=NO_ATTACK, epsilon=DEFAULT_EPSILON,
                attack_target=UNTARGETED) -> Explanation | None:
        """The CAM overlay of the served class (or ``target``), its faithfulness figures and the SE attention:
        the last of ``explain_steps``."""
        return _last(self.explain_steps(image, architecture, method, layer, target, opacity, corruption, severity,
                                        attack, epsilon, attack_target))

    def explain_steps(self, image, architecture, method=RECOMMENDED, layer=None, target=PREDICTED,
                      opacity=0.5, corruption=NO_CORRUPTION, severity=3, attack=NO_ATTACK,
                      epsilon=DEFAULT_EPSILON, attack_target=UNTARGETED) -> Iterator[Explanation]:
        """``explain`` in two steps: the map with a note that its check is running, then the same map with its
        verdict and bars. The check (the random-weights twin's map and the held-out curves) costs as much again
        as the map, so the app shows the map as soon as it exists. Yields nothing when the image was cleared.

        ``method`` RECOMMENDED takes the checkpoint's most faithful method and layer, chosen by the deletion
        and sanity checks, and ignores ``layer``; otherwise ``layer`` counts CAM layers from 1 (shallowest),
        values past the deepest meaning the deepest.
        """
        if image is None:
            return
        if method != RECOMMENDED and method not in explain.METHODS:
            raise RequestError(f"unknown method {method!r}; choose {RECOMMENDED!r} or one of "
                               f"{', '.join(explain.METHODS)}")
        try:
            opacity = float(opacity)
            depth = int(layer) if layer is not None else None
        except (TypeError, ValueError, OverflowError):
            raise RequestError("layer must be a whole number and opacity a number from 0 to 1") from None
        if not 0 <= opacity <= 1:
            raise RequestError(f"opacity must be between 0 and 1, got {opacity}")
        pil, loaded, prediction, prediction_key = self._served(image, architecture, corruption, severity, attack,
                                                               epsilon, attack_target)
        names = loaded.config["class_names"]
        if target in (None, "", PREDICTED):
            explained = prediction.index
        elif target in names:
            explained = names.index(target)
        else:
            raise RequestError(f"unknown target class {target!r}; choose {PREDICTED!r} or one of {', '.join(names)}")
        layers = explain.cam_layer_choices(loaded.model)
        if method == RECOMMENDED:
            method, layer_name = self.store.recommended_cam(loaded.name)
            layer_name = layer_name or layers[-1]
        else:
            layer_name = layers[min(max(depth or len(layers), 1), len(layers)) - 1]
        x = prediction.x
        entry = self.checked_map(loaded, prediction_key, x, explained, method, layer_name)
        with loaded.lock:
            excitations, se_map = explain.se_attention(loaded.model, x)
        shown = pictures.fit(pil)
        picture = pictures.framed(explain.overlay(shown, entry.heatmap, opacity))
        se_plot = se_plots.se_plot(loaded, excitations, prediction.index) if excitations else None
        se_map = pictures.framed(explain.overlay(shown, se_map, opacity)) if excitations else None
        words = dict(map_words=wording.map_description(method, layer_name, layers, names[explained], entry.chosen),
                     se_words=wording.se_description(len(excitations), prediction.display_name),
                     shape_words=pictures.shape_note(shown), architecture=prediction.display_name,
                     shown=names[explained])
        if entry.figures is None:
            # No bars yet: an empty frame (not None) keeps the plot's axes while the check runs.
            yield Explanation(picture, se_plot, wording.faithfulness_frame(None),
                              wording.explanation_note(None, None, **words), se_map)
        figures = self.check(loaded, entry, x, explained, method, layer_name)
        verdict = map_verdict(figures)
        yield Explanation(picture, se_plot, wording.faithfulness_frame(verdict),
                          wording.explanation_note(verdict, figures, **words), se_map)

    def explain_outputs(self, image, architecture, method=RECOMMENDED, layer=None, target=PREDICTED, opacity=0.5,
                        corruption=NO_CORRUPTION, severity=3, attack=NO_ATTACK, epsilon=DEFAULT_EPSILON,
                        attack_target=UNTARGETED) -> Iterator[tuple]:
        """``explain_steps`` as Classify's outputs (``Explanation.as_tuple``); one empty answer when the image was
        cleared, so that the old map goes too."""
        answered = False
        for answered in self.explain_steps(image, architecture, method, layer, target, opacity, corruption,
                                           severity, attack, epsilon, attack_target):
            yield answered.as_tuple()
        if not answered:
            yield None, None, None, "", None

    @staticmethod
    def _map(model, x, target: int, method: str, layer: str) -> tuple:
        """``explain.cam``'s map, and for the "chosen" method the name of the method it chose (else None)."""
        if method == "chosen":
            maps, _, names = chosen_batch(model, x, [target], return_choice=True)
            return maps[0], names[0]
        return explain.cam(model, x, target, method, layer), None

    # -- Compare ---------------------------------------------------------------------------------------
    def compare(self, image, progress=None, corruption=NO_CORRUPTION, severity=3, attack=NO_ATTACK,
                epsilon=DEFAULT_EPSILON, attack_target=UNTARGETED) -> tuple[pd.DataFrame, list, str] | None:
        """Every architecture on one image: (table, gallery of CAM overlays with captions, summary), each
        map by its checkpoint's most faithful method; the last of ``compare_steps``."""
        return _last(self.compare_steps(image, progress, corruption, severity, attack, epsilon, attack_target))

    def compare_steps(self, image, progress=None, corruption=NO_CORRUPTION, severity=3, attack=NO_ATTACK,
                      epsilon=DEFAULT_EPSILON,
                      attack_target=UNTARGETED) -> Iterator[tuple[pd.DataFrame, list, str]]:
        """``compare`` as it fills in (``serve.compare.compare_steps``, through this service's caches)."""
        return compare_steps(self, image, progress, corruption, severity, attack, epsilon, attack_target)

    # -- Model zoo -------------------------------------------------------------------------------------
    def zoo_details(self, architecture) -> tuple[Image.Image | None, Image.Image | None, str, Image.Image,
                                                 Image.Image | None]:
        """Training curves, confusion matrix, card, block diagram and robustness plots of one architecture."""
        name = known_architecture(architecture)
        config = self.store.config(name)
        card, diagram = architecture_card(self.store, name), self.diagram(name)
        if config is None:
            return None, None, card, diagram, None
        folder = Path(config["_folder"])
        confusion = checkpoint_picture(folder, "confusion.png")
        if confusion is None:
            card += "\n\n" + wording.NO_CONFUSION
        return checkpoint_picture(folder, "curves.png"), confusion, card, diagram, robustness_picture(folder)


def _last(steps: Iterator):
    """The last item of ``steps`` (None if there is none): a step-by-step answer's final state."""
    return next(iter(deque(steps, maxlen=1)), None)
