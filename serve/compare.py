"""Compare: every architecture on one image, through the service's caches (``ZooService.compare_steps``).

The predictions and the vote come first, then each architecture's map, then each map's verdict, so that a
visitor sees the quick parts at once. Under an attack each architecture is shown its own attacked file.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import pandas as pd

import explain
from explain.verdict import map_verdict

from . import pictures, wording
from .attacks import attack_request
from .errors import RequestError
from .predict import Prediction, compare_all

GALLERY_SIDE = 256  # Compare's overlays are thumbnails: eleven full-size blends would cost more than the models
# Compare shows its progress at most this often (and at the end of each phase): each step sends the whole table
# and gallery again, some 40 ms over HTTP, which one step per map and per verdict added up to about a second.
COMPARE_STEP_S = 1.0


def compare_steps(service, image, progress, corruption, severity, attack, epsilon,
                  attack_target) -> Iterator[tuple[pd.DataFrame, list, str]]:
    """``compare`` as it fills in: every prediction and the vote; then each architecture's map, captioned
    "checking"; then each map's verdict. The maps come first because the verdicts (each a random-weights
    twin's map and the held-out curves) take as long again, and the maps are what Compare is for.
    A step comes at most every ``COMPARE_STEP_S`` while maps or verdicts are added, and once each phase is
    done. ``progress(i, n, step)`` before each map and each verdict. Yields nothing when the image was
    cleared.

    With an attack, each architecture is shown its own attacked file (a white-box attack on its served
    prediction), and its map is of that file."""
    request = attack_request(attack, epsilon, attack_target)
    if image is None:
        return
    pil, source_key = service.upload(image, corruption, severity)
    shown, keys = {}, {}  # per architecture: the image it was shown and its prediction's key

    def predict_one(name: str) -> Prediction:
        loaded = service.store.get(name)
        checked = attack_request(attack, epsilon, attack_target, loaded.config["class_names"])
        shown[name], prediction, keys[name] = service._served_by(loaded, pil, source_key, corruption, severity,
                                                              checked)
        return prediction

    rows, majority = compare_all(service.store, pil, predict_one=predict_one)  # eleven predictions: quick
    answered = [row for row in rows if row.error is None]
    if not answered:
        raise RequestError("No architecture has a checkpoint yet; train one with `python -m train --arch resnet`.")
    summary = wording.compare_summary(answered, majority)
    if request.active:
        summary = wording.compare_attack_summary(
            [service._attacks.get(keys[row.arch]) for row in answered], request, answered) + "\n\n" + summary
    table = {index: wording.compare_row(row) for index, row in enumerate(rows)}
    gallery, maps = [], {}  # maps: row index -> (CheckedMap, method, layer, place in the gallery)

    def answer():
        return pd.DataFrame(list(table.values()), columns=wording.COMPARE_HEADERS), list(gallery), summary

    shown_at = time.perf_counter()

    def due() -> bool:
        nonlocal shown_at
        if time.perf_counter() - shown_at < COMPARE_STEP_S:
            return False
        shown_at = time.perf_counter()
        return True

    yield answer()
    steps = 2 * len(answered)
    for index, row in enumerate(rows):
        if row.error is not None:
            continue
        if progress is not None:
            progress(len(maps), steps, f"{row.display_name}: map")
        loaded = service.store.get(row.arch)
        method, layer = service.store.recommended_cam(row.arch)
        layer = layer or explain.cam_layer_choices(loaded.model)[-1]  # as Classify names it: one cache entry
        entry = service.checked_map(loaded, keys[row.arch], row.prediction.x, row.prediction.index, method, layer)
        maps[index] = entry, method, layer, len(gallery)
        # Thumbnails GALLERY_SIDE long: a big upload brought down, a small one (a 32 x 32 view) raised.
        thumbnail = pictures.fit(shown[row.arch], shortest=GALLERY_SIDE, longest=GALLERY_SIDE)
        gallery.append((pictures.framed(explain.overlay(thumbnail, entry.heatmap, 0.5)),
                        wording.compare_caption(row)))
        table[index] = wording.compare_row(row, None, method, entry.ms)
        if due() and len(maps) < len(answered):
            yield answer()
    yield answer()  # every map
    shown_at = time.perf_counter()
    for done, (index, (entry, method, layer, place)) in enumerate(maps.items()):
        row = rows[index]
        if progress is not None:
            progress(len(maps) + done, steps, f"{row.display_name}: verdict")
        loaded = service.store.get(row.arch)
        verdict = map_verdict(service.check(loaded, entry, row.prediction.x, row.prediction.index, method, layer))
        gallery[place] = (gallery[place][0], wording.compare_caption(row, verdict))
        table[index] = wording.compare_row(row, verdict, method, entry.ms)
        if due() and done + 1 < len(maps):
            yield answer()
    yield answer()  # every verdict
