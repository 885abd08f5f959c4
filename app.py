"""The model zoo's web app: classify an image with any of eleven CIFAR-10 classifiers, see where it looked.

``python app.py`` serves on $GRADIO_SERVER_NAME:$GRADIO_SERVER_PORT (default 127.0.0.1:7860); the same
file is a Hugging Face Space's entry point. Tabs: Classify (top-5, what the model sees, Grad-CAM and its
faithfulness, SE attention, the architecture's card), Compare (every architecture on one image) and
Model zoo (the checkpoints' metrics, curves and confusion matrices).

API (every event has an ``api_name``; see the page's "Use via API" link):
    /predict(image, architecture) -> {class: probability}
    /explain(image, architecture, method="recommended", layer=4, target="predicted", opacity=0.5)
        -> (overlay image, SE excitation plot or None, faithfulness plot data, note, SE-weighted map or None)
    /compare(image) -> (table, gallery of CAM overlays, summary)
``architecture`` is a registry name ("resnet"); ``method="recommended"`` is the architecture's most faithful
CAM method and layer (``explain.recommended_cam``); with a named method, ``layer`` counts from 1 (shallowest)
and values past a model's deepest CAM layer mean its deepest.

The layout only arranges what the pure functions of ``serve/`` and ``explain/`` return. Nothing reaches
the network at import time; checkpoints load on first use (from $CHECKPOINT_DIR, or from
$CHECKPOINT_REPO on the Hub when local files are absent) and stay cached.
"""
from __future__ import annotations

import base64
import ctypes
import json
import os
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a demo server


def tune_malloc(arenas: int = 2, mmap_threshold: int = 32 * 2**20, trim_threshold: int = 64 * 2**20) -> None:
    """What ``MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864`` do, for a
    server started without them.

    - glibc gives each thread that allocates its own arena (up to eight per core) and seldom returns their
      memory: in bench/soak.py (1,000 requests from 16 clients) the server grew by 250 MB; with two arenas,
      by 48-102 MB, when glibc's mmap threshold was left to grow with each large block freed.
    - A fixed threshold stops that growth. At 1 MB (until 2026-11-27) every decoded upload and every
      activation over 1 MB had a mapping of its own, handed back when freed: soak growth 14.6-31.3 MB, but
      each fresh mapping is zero-filled page by page, on every request. In-process, NIN's six-view served
      forward pass took 30 ms instead of 18.5.
    - At 32 MB, with freed memory kept until 64 MB lie free at the top of the heap, the activations reuse
      the same heap pages from request to request: ``python bench/http_latency.py --clients 0`` on a 2-core
      AMD EPYC, two runs each way, interleaved: /predict for NIN 59-65 -> 32-35 ms, /explain for MLP-Mixer
      211-214 -> 111-116 ms, /compare 500-661 -> 394-461 ms; under load (its 8 clients) 28.2-30.6 -> 30.8-30.9
      requests/s, server CPU 43-47 -> 41-42 ms a request. The price is memory kept: soak growth 34.6-41.7 MB
      in three runs (31.3 MB at 1 MB the same day), under the 50 MB allowed.
    Only arenas made after the call are bounded, so it runs before any server thread starts. A no-op off
    glibc; a setting given in the environment is left alone.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        # mallopt's parameter numbers in glibc's malloc.h; setting either threshold stops its dynamic growth.
        for variable, number, value in (("MALLOC_ARENA_MAX", -8, arenas), ("MALLOC_MMAP_THRESHOLD_", -3, mmap_threshold),
                                        ("MALLOC_TRIM_THRESHOLD_", -1, trim_threshold)):
            if not os.environ.get(variable):
                libc.mallopt(number, value)
    except (OSError, AttributeError):
        pass  # another C library (musl): nothing to tune


tune_malloc()

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import explain  # noqa: E402
import serve  # noqa: E402
from architectures import check_name, create_model, list_models, model_class  # noqa: E402

ROOT = Path(__file__).resolve().parent
EXAMPLES_DIR = ROOT / "examples"
EXAMPLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PREDICTED = "predicted"
# Random squares in the faithfulness panel's baseline: four, not the checks' eight, so that the panel's batch
# (original, map, centre, squares, random weights' map: eight images) and the random-weights map together
# keep /explain within its 150 ms on two cores (bench/RESULTS.md; eight squares put googlenet at 163 ms).
PANEL_RANDOM_SQUARES = 4
RECOMMENDED = "recommended"  # the CAM method: each architecture's most faithful one (explain.recommended_cam)


@lru_cache(maxsize=None)
def _default_model_facts(name: str) -> tuple[tuple[str, ...], bool]:
    """CAM layers and whether it has SE blocks, of ``name`` built once with its default arguments (models
    name their layers per instance)."""
    model = create_model(name)
    return tuple(explain.cam_layer_choices(model)), explain.has_se(model)


def default_cam_layers(name: str) -> tuple[str, ...]:
    return _default_model_facts(name)[0]


def default_has_se(name: str) -> bool:
    return _default_model_facts(name)[1]


MAX_DEPTH = max(len(default_cam_layers(name)) for name in list_models())  # deepest layer index any model has
GALLERY_SIDE = 256  # Compare's overlays are thumbnails: eleven full-size blends would cost more than the models

STORE = serve.ModelStore(os.environ.get("CHECKPOINT_DIR", ROOT / "checkpoints"))
ON_GPU = STORE.device.type == "cuda"
# Requests served at once. On a CPU every request uses one thread, so a 2-core Space runs two; on a GPU
# the tiny models leave room for more. GRADIO_CONCURRENCY overrides.
CONCURRENCY = int(os.environ.get("GRADIO_CONCURRENCY", 8 if ON_GPU else max(1, min(4, os.cpu_count() or 1))))
if not ON_GPU:
    torch.set_num_threads(1)  # one 32 x 32 image gains nothing from more threads; requests run side by side


# ---------------------------------------------------------------------------------------------------------
# Inputs: the upload and the architecture name are untrusted.
def upload_source(payload):
    """The uploaded file's path (or a pasted image's bytes) from an image input, undecoded.

    Image events run with ``preprocess=False``: Gradio's own preprocessing would open the file with
    Pillow before the handler runs, so a broken upload would fail there with a message meant for
    developers. Gradio still checks that the path lies in its upload cache; ``serve.load_image``
    decodes, with its limits and a clear error. Direct Python calls may pass a path or bytes.
    """
    if payload is None or isinstance(payload, (str, os.PathLike, bytes)):
        return payload
    if not isinstance(payload, dict):
        raise gr.Error("No image arrived; please upload it again.")
    url = payload.get("url") or ""
    if url.startswith("data:"):
        encoded = url.split(",", 1)[-1]
        if len(encoded) > serve.MAX_UPLOAD_BYTES * 4 // 3 + 4:
            raise gr.Error(f"Cannot use this image: it is larger than {serve.MAX_UPLOAD_BYTES // 2**20} MB.")
        try:
            return base64.b64decode(encoded)
        except ValueError:
            raise gr.Error("Cannot use this image: the pasted data is not valid base64.") from None
    if not payload.get("path"):
        raise gr.Error("No image arrived; please upload it again.")
    return payload["path"]


@lru_cache(maxsize=16)
def _load_file(path: str, mtime_ns: int, size: int) -> Image.Image:
    return serve.load_image(path)


def decode(image) -> Image.Image:
    """The upload as RGB; a ``gr.Error`` that says what is wrong with it otherwise.

    One classification runs three events on the same upload (label, details, explanation), so decoded
    files are kept in a small cache keyed by path, mtime and size. Callers never modify the image.
    """
    image = upload_source(image)
    if image is None:
        raise gr.Error("Please upload an image first.")
    try:
        if isinstance(image, (str, os.PathLike)) and os.path.isfile(image):
            stat = os.stat(image)
            return _load_file(str(image), stat.st_mtime_ns, stat.st_size)
        return serve.load_image(image)
    except serve.ImageDecodeError as error:
        raise gr.Error(f"Cannot use this upload: {error}.", title="Not a usable image") from None


def get_model(architecture) -> serve.LoadedModel:
    try:
        name = check_name(architecture)
    except ValueError as error:
        raise gr.Error(str(error), title="Unknown architecture") from None
    try:
        return STORE.get(name)
    except serve.ModelUnavailable as error:
        raise gr.Error(str(error), title="Checkpoint not available") from None


# ---------------------------------------------------------------------------------------------------------
# Architecture list, default and card.
def _served_accuracy(config: dict):
    """Validation accuracy as the app predicts (shifted and mirrored copies averaged); the model-alone
    figure for a checkpoint that does not record it."""
    return config.get("val_accuracy_tta", config.get("val_accuracy"))


def architecture_choices(configs: dict[str, dict]) -> list[tuple[str, str]]:
    choices = []
    for name in list_models():
        display = model_class(name).display_name or name
        if name in configs:
            choices.append((f"{display}  ({_served_accuracy(configs[name]) or 0:.1%})", name))
        else:
            choices.append((f"{display}  (no checkpoint yet)", name))
    return choices


def best_architecture(configs: dict[str, dict]) -> str:
    """The checkpoint with the highest validation accuracy as served; the zoo's first model when there is none."""
    if not configs:
        return list_models()[0]
    return max(configs, key=lambda name: _served_accuracy(configs[name]) or 0.0)


def _minutes(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def architecture_card(name: str) -> str:
    cls = model_class(name)
    config = STORE.config(name)
    lines = [f"### {cls.display_name or name}", "", cls.key_idea, ""]
    if config is None and STORE.has_local(name):
        lines.append(f"**Its checkpoint cannot be used** (`{name}/config.json` is invalid); choose it to see why.")
    elif config is None:
        lines.append(f"**No checkpoint yet** for `{name}`: it appears here once trained "
                     f"(`python -m train --arch {name}`).")
    else:
        entry = STORE.ood_thresholds.get(name) or {}
        ood = (f"{'confidence below' if entry.get('score') == 'max_prob' else 'entropy above'} "
               f"{entry['threshold']:.3g}" if entry else "not calibrated")
        lines += [
            "| | |", "|---|---|",
            f"| Parameters | {config.get('params', 0) / 1e6:.2f} M |",
            f"| Validation accuracy | **{_served_accuracy(config) or 0:.2%}** "
            f"averaged over shifted and mirrored copies, as served; {config.get('val_accuracy', 0):.2%} for "
            f"the image alone ({config.get('val_split', 'held-out split')}) |",
            f"| Training | {config.get('epochs', '?')} epochs, {_minutes(config.get('train_seconds'))} on "
            f"{config.get('hardware', '?')} |",
            f"| Out-of-distribution flag | {ood} |",
        ]
    if cls.paper:
        lines += ["", f"Paper: [{cls.paper}]({cls.paper})"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Classify: the pure handlers behind the API.
def predict(image, architecture):
    """The top classes of ``architecture`` for ``image``: {class name: probability}."""
    if image is None:
        return None  # the image was cleared
    pil, loaded = decode(image), get_model(architecture)
    return serve.run_model(loaded, pil, thresholds=STORE.ood_thresholds).label_dict()


def _preview(pil: Image.Image, config: dict) -> Image.Image:
    """The model's input, blown up with nearest-neighbour so its pixels stay visible."""
    view = Image.fromarray(serve.model_view(pil, config))
    return view.resize((view.width * 6, view.height * 6), Image.Resampling.NEAREST)


def describe(image, architecture):
    """The out-of-distribution note beside the label and the model's 32 x 32 view of the image."""
    if image is None:
        return "", None
    pil, loaded = decode(image), get_model(architecture)
    prediction = serve.run_model(loaded, pil, thresholds=STORE.ood_thresholds)
    verdict = prediction.ood
    icon = {True: "⚠️ ", False: "✅ ", None: ""}[verdict["ood"]]
    note = (f"{icon}**{prediction.label}** at {prediction.confidence:.0%} by {prediction.display_name}. "
            f"{verdict['message']}")
    return note, _preview(pil, loaded.config)


def architecture_panel(architecture):
    """What depends on the architecture alone: its card, the layer slider's range (set to its deepest layer),
    the SE plots' visibility.

    The slider is an output only: as an input, Gradio checks its value against the maximum this session
    last set, and a value from the previous architecture still in flight failed that check now and then.
    """
    try:
        name = check_name(architecture)
    except ValueError as error:
        raise gr.Error(str(error), title="Unknown architecture") from None
    spec = gr.update(value=None, visible=False)
    config = STORE.config(name)
    depth = len(default_cam_layers(name))
    if config is not None:
        try:
            depth = len(explain.cam_layer_choices(STORE.get(name).model))
        except serve.ModelUnavailable:
            pass
        version = _profiles_version(config["_folder"])
        picture = None if version is None else _class_specificity_plot(*version)
        if picture is not None:
            spec = gr.update(value=picture, visible=True)
    has_se = gr.update(visible=default_has_se(name))
    return architecture_card(name), gr.update(maximum=depth, value=depth), spec, has_se, has_se


def _profiles_version(folder) -> tuple[str, int, int] | None:
    """(folder, mtime, size) of the SE class profiles saved beside a checkpoint; None when there are none.

    Every SE explanation needs the profiles and their plots, so these are built once per file version.
    """
    path = Path(folder) / explain.PROFILES_NAME
    if not path.is_file():
        return None
    stat = path.stat()
    return str(folder), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=32)
def _read_se_profiles(folder: str, mtime_ns: int, size: int):
    try:
        return explain.load_se_profiles(folder)
    except ValueError:
        return None


@lru_cache(maxsize=32)
def _class_specificity_plot(folder: str, mtime_ns: int, size: int):
    profiles = _read_se_profiles(folder, mtime_ns, size)
    return explain.plot_class_specificity(profiles) if profiles is not None and profiles.get("blocks") else None


@lru_cache(maxsize=32)
def _se_plotter(version: tuple | None, layout: tuple, class_names: tuple) -> explain.SEExcitationPlot:
    """A checkpoint's SE excitation plot, its fixed parts drawn once (~90 ms), each image's lines per call."""
    profiles = None if version is None else _read_se_profiles(*version)
    return explain.SEExcitationPlot(list(layout), profiles, class_names)


def se_excitation_plot(loaded: serve.LoadedModel, excitations, predicted: int):
    layout = tuple((block, len(values)) for block, values in excitations)
    plotter = _se_plotter(_profiles_version(loaded.folder), layout, tuple(loaded.config["class_names"]))
    return plotter.draw(excitations, predicted)


def _target_index(target, class_names: list[str]) -> int | None:
    if target in (None, "", PREDICTED):
        return None
    if target not in class_names:
        raise gr.Error(f"unknown target class {target!r}; choose {PREDICTED!r} or one of {', '.join(class_names)}")
    return class_names.index(target)


def _faithfulness_frame(figures: dict) -> pd.DataFrame:
    return pd.DataFrame({
        "blanked (25% of pixels)": ["CAM's hottest", "centre square", "random squares", "random weights' map"],
        "probability drop": [figures["cam_drop"], figures["centre_drop"], figures["random_square_drop"],
                             figures["random_weights_drop"]],
    })


def explain_image(image, architecture, method=RECOMMENDED, layer=MAX_DEPTH, target=PREDICTED, opacity=0.5):
    """Grad-CAM-family overlay of ``image`` for ``architecture``, its SE plot and its faithfulness.

    ``method`` RECOMMENDED takes the architecture's most faithful method and layer by the deletion and
    sanity checks (``explain.recommended_cam``) and ignores ``layer``.

    Returns (overlay, SE excitation plot or None, faithfulness data, note, SE-weighted map overlay or None).
    """
    if image is None:
        return None, None, None, "", None
    pil, loaded = decode(image), get_model(architecture)
    if method != RECOMMENDED and method not in explain.METHODS:
        raise gr.Error(f"unknown method {method!r}; choose {RECOMMENDED!r} or one of {', '.join(explain.METHODS)}")
    try:
        opacity = float(opacity)
        depth = int(layer)
    except (TypeError, ValueError, OverflowError):
        raise gr.Error("layer must be a whole number and opacity a number from 0 to 1") from None
    if not 0 <= opacity <= 1:
        raise gr.Error(f"opacity must be between 0 and 1, got {opacity}")
    model, config = loaded.model, loaded.config
    names = config["class_names"]
    target_index = _target_index(target, names)
    layers = explain.cam_layer_choices(model)
    layer_name = layers[min(max(depth, 1), len(layers)) - 1]
    if method == RECOMMENDED:
        method, layer_name = explain.recommended_cam(loaded.name)
        layer_name = layer_name or layers[-1]
    x = serve.to_tensor(pil, config, STORE.device)
    with loaded.lock:
        # The class the top-5 shows (shifted and mirrored copies averaged), so the map explains that label.
        predicted = serve.served_class(model, x)
        explained = predicted if target_index is None else target_index
        heatmap = explain.cam(model, x, explained, method, layer_name)
        if loaded.random_twin is None:
            loaded.random_twin = explain.randomised_twin(model)
        # The same method's map from random weights: blanking it shows what the map's shape alone costs.
        random_heatmap = explain.cam(loaded.random_twin, x, explained, method, layer_name)
        figures = explain.faithfulness(model, x, heatmap, explained, random_weights_heatmap=random_heatmap,
                                       n_random=PANEL_RANDOM_SQUARES)
        excitations, se_map = explain.se_attention(model, x)
    shown = names[explained]
    picture = explain.overlay(pil, heatmap, opacity)
    if excitations:
        se_plot = se_excitation_plot(loaded, excitations, predicted)
        se_map = explain.overlay(pil, se_map, opacity)
        se_line = (f"SE attention: {len(excitations)} squeeze-and-excitation blocks; the plot shows how much each "
                   "block turned each channel up (1) or down (0) for this image, and the SE-weighted map where "
                   "the channels that the last block turned up are active.")
    else:
        se_plot = None
        se_line = (f"{loaded.config.get('display_name', loaded.name)} has no SE blocks, so there is no SE "
                   "attention to show.")
    ratio = figures.get("ratio_vs_random")
    ratio_text = f"{ratio:.1f}x the drop from blanking random squares" if ratio is not None else \
        "random squares did not lower it at all"
    if method in explain.LAYER_FREE:
        where = "the input (no layer): how far the probability falls when each window of it is blanked"
    else:
        where = (f"layers `{layer_name}` to `{layers[-1]}` fused" if method in explain.FUSED
                 and layer_name != layers[-1] else f"layer `{layer_name}`")
        where += f" ({layers.index(layer_name) + 1} of {len(layers)})"
    note = (f"{method} at {where}, class "
            f"**{shown}**. Blanking the CAM's hottest quarter of the image lowers that class's probability "
            f"(for the image as uploaded, without the shifted and mirrored copies the top-5 also averages in) "
            f"by "
            f"{figures['cam_drop']:.2f} (from {figures['probability']:.2f}): {ratio_text}. A faithful map "
            f"beats the centre square ({figures['centre_drop']:.2f}), random squares, and the same method's map "
            f"from the same network with random weights ({figures['random_weights_drop']:.2f}), whose drop comes "
            f"from the map's shape alone.\n\n{se_line}")
    return picture, se_plot, _faithfulness_frame(figures), note, se_map


# ---------------------------------------------------------------------------------------------------------
# Compare.
def compare(image, progress=gr.Progress()):
    """Every architecture on one image: (table, gallery of CAM overlays, summary); each architecture's CAM
    by its most faithful method (``explain.recommended_cam``)."""
    if image is None:
        return None, None, ""
    pil = decode(image)
    thumbnail = pil.copy()
    thumbnail.thumbnail((GALLERY_SIDE, GALLERY_SIDE))
    rows, majority = serve.compare_all(STORE, pil, progress=lambda i, n, name: progress(i / n, desc=name))
    table, gallery = [], []
    for row in rows:
        if row.error is not None:
            table.append([model_class(row.arch).display_name, "—", None, None, "—", None,
                          "no checkpoint yet" if "no checkpoint" in row.error else "checkpoint unusable"])
            continue
        loaded = STORE.get(row.arch)
        method, layer = explain.recommended_cam(row.arch)
        start = time.perf_counter()
        with loaded.lock:
            heatmap = explain.cam(loaded.model, row.prediction.x, method=method, layer=layer)
        cam_ms = (time.perf_counter() - start) * 1000
        gallery.append((explain.overlay(thumbnail, heatmap, 0.5), f"{row.display_name}: {row.label} "
                                                                  f"{row.confidence:.0%}"))
        table.append([row.display_name, row.label, round(row.confidence, 3), round(row.latency_ms, 1),
                      "yes" if row.agrees_with_majority else "no",
                      None if row.agreement is None else round(row.agreement, 2), f"{method} {cam_ms:.0f} ms"])
    progress(1.0)
    frame = pd.DataFrame(table, columns=COMPARE_HEADERS)
    answered = [row for row in rows if row.error is None]
    if not answered:
        raise gr.Error("No architecture has a checkpoint yet; train one with `python -m train --arch resnet`.")
    agree = sum(row.agrees_with_majority for row in answered)
    summary = f"Majority vote: **{majority}** ({agree} of {len(answered)} architectures agree)."
    return frame, gallery, summary


COMPARE_HEADERS = ["architecture", "top-1", "confidence", "latency (ms)", "agrees with majority",
                   "agreement with the others", "note"]


# ---------------------------------------------------------------------------------------------------------
# Model zoo.
@lru_cache(maxsize=None)
def _macs(name: str, arch_args: str, image_size: int) -> float:
    """Multiply-accumulates of one forward pass of a fresh model (the README table's own count)."""
    from train.macs import count_macs

    return float(count_macs(create_model(name, **json.loads(arch_args)).eval(), image_size))


_LATENCY_MS: dict[str, float] = {}


def zoo_table(current=None, zoo_current=None):
    """(table, accuracy-vs-parameters data, note, dropdown updates) from the checkpoints' config files.

    The dropdowns keep their choice when it has a checkpoint; otherwise they move to the most accurate.
    """
    configs = STORE.configs(fetch=bool(STORE.repo))
    rows = []
    for name, config in configs.items():
        folder = Path(config["_folder"])
        weights = folder / "model.safetensors"
        rows.append({
            "architecture": config.get("display_name", name),
            "name": name,
            "val accuracy": _served_accuracy(config),
            "without TTA": config.get("val_accuracy"),
            "params (M)": round(config.get("params", 0) / 1e6, 3),
            "MMACs": round(_macs(name, json.dumps(config.get("arch_args", {}), sort_keys=True),
                                 config.get("image_size", 32)) / 1e6, 1),
            "size (MB)": round(weights.stat().st_size / 1e6, 2) if weights.is_file() else None,
            "latency (ms)": _LATENCY_MS.get(name),
            "epochs": config.get("epochs"),
            "training time (min)": round(config.get("train_seconds", 0) / 60, 1),
            "hardware": config.get("hardware", ""),
        })
    frame = pd.DataFrame(rows, columns=ZOO_HEADERS)
    frame = frame.sort_values("val accuracy", ascending=False) if rows else frame
    missing = [name for name in list_models() if name not in configs]
    note = (f"{len(configs)} of {len(list_models())} architectures have a checkpoint."
            + (f" Not yet: {', '.join(missing)}." if missing else "")
            + f" Latency: median of 20 forward passes of one image on this server's {STORE.device.type.upper()}, "
              "after the button below is pressed. MMACs: multiply-accumulates per image.")
    # Accuracy against latency once it is measured on this machine, against parameters until then.
    measured = bool(rows) and frame["latency (ms)"].notna().all()
    x = "latency (ms)" if measured else "params (M)"
    plot = gr.update(value=frame[["architecture", x, "val accuracy"]] if rows else None, x=x,
                     label=f"Validation accuracy against {'latency' if measured else 'parameters'}")
    best = best_architecture(configs)
    choices = architecture_choices(configs)
    zoo_choices = [(label, value) for label, value in choices if value in configs] or choices
    return (frame, plot, note, gr.update(choices=choices, value=current if current in configs else best),
            gr.update(choices=zoo_choices, value=zoo_current if zoo_current in configs else best))


ZOO_HEADERS = ["architecture", "name", "val accuracy", "without TTA", "params (M)", "MMACs", "size (MB)",
               "latency (ms)", "epochs", "training time (min)", "hardware"]


def measure_latency(progress=gr.Progress()):
    """Median forward-pass time of every available model on this machine (one 32 x 32 image).

    Returns the zoo table and the plot, now of accuracy against latency.
    """
    names = STORE.available(fetch=bool(STORE.repo))
    for i, name in enumerate(names):
        progress(i / max(1, len(names)), desc=name)
        try:
            loaded = STORE.get(name)
        except serve.ModelUnavailable:
            continue  # a broken checkpoint has no latency; its own error shows where it is chosen
        size = loaded.config.get("image_size", 32)
        x = torch.zeros(1, 3, size, size, device=STORE.device)
        times = []
        with loaded.lock, torch.inference_mode():
            for repeat in range(25):
                start = time.perf_counter()
                loaded.model(x)
                if ON_GPU:
                    torch.cuda.synchronize()
                if repeat >= 5:  # the first runs warm caches up
                    times.append((time.perf_counter() - start) * 1000)
        _LATENCY_MS[name] = round(float(np.median(times)), 2)
    return zoo_table()[:2]


def _checkpoint_picture(folder: Path, filename: str):
    path = folder / filename
    if not path.is_file():
        return None
    try:
        return serve.load_image(path, max_side=1400)
    except serve.ImageDecodeError:
        return None


def zoo_details(architecture):
    """Training curves, confusion matrix and card of one architecture."""
    try:
        name = check_name(architecture)
    except ValueError as error:
        raise gr.Error(str(error), title="Unknown architecture") from None
    config = STORE.config(name)
    if config is None:
        return None, None, architecture_card(name)
    folder = Path(config["_folder"])
    confusion = _checkpoint_picture(folder, "confusion.png")
    card = architecture_card(name)
    if confusion is None:
        card += "\n\nNo confusion matrix yet (`python -m train.evaluate` writes `confusion.png`)."
    return _checkpoint_picture(folder, "curves.png"), confusion, card


# ---------------------------------------------------------------------------------------------------------
# Layout.
def _examples() -> list[str]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(str(p) for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


def _example_label(path: str) -> str:
    return Path(path).stem.replace("_", " ")


def build_demo() -> gr.Blocks:
    configs = STORE.configs()  # local files only: no network at import time
    default = best_architecture(configs)
    class_names = next(iter(configs.values()))["class_names"] if configs else CIFAR10
    examples = _examples()

    with gr.Blocks(title="CIFAR-10 model zoo", analytics_enabled=False) as demo:
        gr.Markdown(
            "# CIFAR-10 model zoo\n"
            "Eleven classic image classifiers, from a plain ConvNet to ResNet, DenseNet, SENet, EfficientNet and "
            "MLP-Mixer, each trained on CIFAR-10's 32 x 32 images (airplane, automobile, bird, cat, deer, dog, "
            "frog, horse, ship, truck). Upload a picture, pick an architecture and see what it predicts and "
            "where it looked.")
        with gr.Tabs():
            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column(scale=5):
                        image = gr.Image(type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"],
                                         label="Image (upload, webcam or paste)", height=300, elem_id="classify-image")
                        architecture = gr.Dropdown(architecture_choices(configs), value=default,
                                                   label="Architecture",
                                                   info="in order of history; % = validation accuracy",
                                                   elem_id="architecture")
                        run = gr.Button("Classify", variant="primary", elem_id="classify-run")
                        with gr.Accordion("Explanation settings", open=True):
                            method = gr.Radio([("most faithful for this architecture", RECOMMENDED)]
                                              + [(m, m) for m in explain.METHODS], value=RECOMMENDED,
                                              label="CAM method",
                                              info="most faithful: the method and layer that best pass the "
                                                   "deletion and sanity checks for this architecture (see "
                                                   "README)")
                            layer = gr.Slider(1, MAX_DEPTH, value=MAX_DEPTH, step=1, label="Layer depth",
                                              info="for a chosen method: 1 = shallowest CAM layer, the deepest "
                                                   "is the usual choice; occlusion takes none")
                            target = gr.Dropdown([("predicted class", PREDICTED)] + [(n, n) for n in class_names],
                                                 value=PREDICTED, label="Explain class")
                            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity")
                        if examples:
                            gr.Examples(examples=[[p] for p in examples], inputs=[image],
                                        example_labels=[_example_label(p) for p in examples],
                                        examples_per_page=16, label="Examples (see examples/ATTRIBUTION.md)")
                    with gr.Column(scale=6):
                        label = gr.Label(num_top_classes=5, label="Top-5 predictions", elem_id="top5")
                        ood_note = gr.Markdown(label="out-of-distribution note", elem_id="ood-note")
                        with gr.Row():
                            preview = gr.Image(label="What the model sees (32 x 32)", format="png", height=220,
                                               interactive=False)
                            # Encoding is part of every answer: JPEG takes ~1 ms here, WebP (the default) ~20 ms.
                            overlay = gr.Image(label="Class activation map", height=220, interactive=False,
                                               format="jpeg", elem_id="cam-overlay")
                        faithfulness = gr.BarPlot(x="blanked (25% of pixels)", y="probability drop", height=200,
                                                  label="Faithfulness: probability drop when pixels are blanked",
                                                  y_lim=[0, 1])
                        explain_note = gr.Markdown(label="explanation note")
                        se_plot = gr.Image(label="SE excitations of this image", visible=default_has_se(default),
                                           format="png", interactive=False, elem_id="se-plot")
                        with gr.Row():
                            # The last SE block's channels, each weighted by its excitation (explain.se_attention).
                            se_map = gr.Image(label="SE-weighted map (last SE block)", visible=default_has_se(default),
                                              height=220, format="jpeg", interactive=False, elem_id="se-map")
                            se_spec = gr.Image(label="SE class-specificity by depth (validation split)",
                                               visible=False, interactive=False)
                        card = gr.Markdown(architecture_card(default), label="architecture card")

            with gr.Tab("Compare", id="compare"):
                gr.Markdown("Every architecture with a checkpoint on the same image: do they agree, how sure "
                            "are they, how fast, and where did each look?")
                with gr.Row():
                    with gr.Column(scale=4):
                        compare_image = gr.Image(type="filepath", image_mode=None,
                                                 sources=["upload", "webcam", "clipboard"], label="Image", height=260,
                                                 elem_id="compare-image")
                        compare_run = gr.Button("Compare all", variant="primary", elem_id="compare-run")
                        if examples:
                            gr.Examples(examples=[[p] for p in examples], inputs=[compare_image],
                                        example_labels=[_example_label(p) for p in examples], examples_per_page=16)
                    with gr.Column(scale=7):
                        compare_summary = gr.Markdown(label="summary", elem_id="compare-summary")
                        compare_table = gr.Dataframe(headers=COMPARE_HEADERS, label="Predictions", interactive=False,
                                                     elem_id="compare-table")
                        compare_gallery = gr.Gallery(label="Class activation map of each (its most faithful method)",
                                                     columns=4, height="auto", format="jpeg",
                                                     elem_id="compare-gallery")

            with gr.Tab("Model zoo", id="zoo"):
                zoo_note = gr.Markdown(label="zoo note", elem_id="zoo-note")
                zoo_frame = gr.Dataframe(headers=ZOO_HEADERS, label="Checkpoints", interactive=False,
                                         elem_id="zoo-table")
                with gr.Row():
                    latency_run = gr.Button("Measure latency on this machine")
                    refresh = gr.Button("Reload checkpoints")
                zoo_plot = gr.ScatterPlot(x="params (M)", y="val accuracy", color="architecture",
                                          label="Validation accuracy against parameters", height=320)
                zoo_arch = gr.Dropdown(architecture_choices(configs), value=default, label="Training details of")
                with gr.Row():
                    curves = gr.Image(label="Training curves", interactive=False)
                    confusion = gr.Image(label="Confusion matrix (validation split)", interactive=False)
                zoo_card = gr.Markdown(label="architecture card")

        # Classify: the label first (the /predict API), then the details, then the explanation.
        explain_inputs = [image, architecture, method, layer, target, opacity]
        explain_outputs = [overlay, se_plot, faithfulness, explain_note, se_map]
        panel_outputs = [card, layer, se_spec, se_plot, se_map]
        raw = dict(preprocess=False)  # the handlers decode uploads themselves (see upload_source)

        def then_describe_and_explain(event, suffix: str = "", visibility: str = "public"):
            event.success(describe, [image, architecture], [ood_note, preview], api_name="describe" + suffix,
                          api_visibility="undocumented", **raw).success(
                explain_image, explain_inputs, explain_outputs, api_name="explain" + suffix,
                api_visibility=visibility, **raw)

        then_describe_and_explain(gr.on([run.click, image.change], predict, [image, architecture], [label],
                                        api_name="predict", trigger_mode="always_last", **raw))
        # A new architecture first resets the panel (its layer slider among it), then classifies: run side by
        # side, the explanation could read the previous architecture's layer.
        then_describe_and_explain(
            architecture.change(architecture_panel, [architecture], panel_outputs,
                                api_name="architecture_panel", api_visibility="undocumented").then(
                predict, [image, architecture], [label], api_name="predict_after_panel",
                api_visibility="undocumented", trigger_mode="always_last", **raw),
            suffix="_after_panel", visibility="undocumented")
        gr.on([method.change, layer.release, target.change, opacity.release], explain_image, explain_inputs,
              explain_outputs, api_name="explain_settings", api_visibility="undocumented", trigger_mode="always_last",
              **raw)

        compare_outputs = [compare_table, compare_gallery, compare_summary]
        compare_run.click(compare, [compare_image], compare_outputs, api_name="compare", **raw)
        compare_image.change(compare, [compare_image], compare_outputs, api_name="compare_on_change",
                             api_visibility="undocumented", trigger_mode="always_last", **raw)

        zoo_outputs = [zoo_frame, zoo_plot, zoo_note, architecture, zoo_arch]
        refresh.click(zoo_table, [architecture, zoo_arch], zoo_outputs, api_name="zoo")
        latency_run.click(measure_latency, None, [zoo_frame, zoo_plot], api_name="measure_latency")
        zoo_arch.change(zoo_details, [zoo_arch], [curves, confusion, zoo_card], api_name="zoo_details")
        # On page load: pick up checkpoints trained since the server started, then fill the panels.
        demo.load(zoo_table, [architecture, zoo_arch], zoo_outputs, api_name="zoo_on_load",
                  api_visibility="undocumented").then(
            zoo_details, [zoo_arch], [curves, confusion, zoo_card], api_name="zoo_details_on_load",
            api_visibility="undocumented").then(
            architecture_panel, [architecture], panel_outputs, api_name="architecture_panel_on_load",
            api_visibility="undocumented")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=int(os.environ.get("GRADIO_QUEUE_SIZE", 64)))
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.launch(
        prevent_thread_lock=True,  # answer first; then import the CAM library while the server waits for clients
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        max_file_size=serve.MAX_UPLOAD_BYTES,
        # Gradio keeps ~100 KB of state per session and every plain-HTTP call opens one: the default bound
        # (10,000) lets a busy Space grow by a gigabyte (bench/soak.py measured ~10 MB per 100 calls).
        state_session_capacity=int(os.environ.get("STATE_SESSION_CAPACITY", 200)),
        ssr_mode=False,
        theme=gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"]),
    )
    threading.Thread(target=explain.warm_up, name="cam-warm-up", daemon=True).start()
    demo.block_thread()
