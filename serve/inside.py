"""The "Look inside" view: every stage of the diagram on the current upload, and the linear probes' plots.

``InsideService.inside(image, architecture)`` returns (gallery, note): one picture per stage in forward
order, captioned with the diagram's name and the output's shape, and a note saying how the channels were
chosen and what happens at each stage. The probes (``tools.probes``, stored beside each checkpoint as
``probes.json`` and ``probes.safetensors``) give each stage's guess for the upload and the plots of probe
accuracy against depth. No Gradio here; nothing depends on an architecture's name.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from architectures import create_model
from explain.figures import figure_to_image
from explain.inside import PROBES_JSON, SELECTION, draw_stage, load_probes, look_inside, probe_predictions
from explain.stages import diagram_facts

from .store import LoadedModel
from .zoo import display_name

INTRO = ("What each stage of the network makes of your image, in the order the image flows through it, under "
         "the names of the diagram in Classify. Channels shown: ")


@lru_cache(maxsize=64)
def stages_of(name: str, arch_args_json: str = "{}", num_classes: int = 10, image_size: int = 32):
    """The diagram's stages of registered architecture ``name`` with these arguments (traced once)."""
    model = create_model(name, num_classes=num_classes, **json.loads(arch_args_json))
    return tuple(diagram_facts(model, image_size))


def _version(folder) -> tuple[str, int, int] | None:
    path = Path(folder) / PROBES_JSON
    if not path.is_file():
        return None
    stat = path.stat()
    return str(folder), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=32)
def _probes(folder: str, mtime_ns: int, size: int, weights_sha256: str):
    return load_probes(folder, weights_sha256)


def probe_curve(facts: dict, title: str) -> Image.Image:
    """Probe accuracy on the validation split against depth (stage number) for one checkpoint."""
    figure = Figure(figsize=(7.5, 3.6), dpi=100)
    ax = figure.add_subplot()
    rows = facts["stages"]
    depth = [row["depth"] for row in rows]
    ax.plot(depth, [row["val_accuracy"] for row in rows], marker="o", color="#1f77b4", label="validation")
    ax.plot(depth, [row["train_accuracy"] for row in rows], marker=".", ls="--", color="#9aa0a6",
            label="training subset")
    ax.set_xticks(depth, [row["stage"].split(" · ")[0] for row in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probe accuracy")
    ax.set_title(f"{title}: where the class becomes linearly readable\n(logistic regression on each stage's "
                 f"pooled output; {facts['train_images']:,} training, {facts['val_images']:,} validation images)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure_to_image(figure)


def probe_zoo_chart(all_facts: dict[str, dict]) -> Image.Image:
    """Every checkpoint's probe accuracy against relative depth (first stage 0, the classifier 1), one line each."""
    figure = Figure(figsize=(9, 4.6), dpi=100)
    ax = figure.add_subplot()
    colours = [f"C{i}" for i in range(10)] + ["#333333"]
    for k, (name, facts) in enumerate(all_facts.items()):
        accuracy = [row["val_accuracy"] for row in facts["stages"]]
        depth = np.linspace(0, 1, len(accuracy)) if len(accuracy) > 1 else np.zeros(1)
        ax.plot(depth, accuracy, marker="o", ms=3, color=colours[k % len(colours)], label=display_name(name),
                ls="-" if k < 10 else "--")
    ax.set_xlabel("relative depth (first stage = 0, classifier = 1)")
    ax.set_ylabel("probe accuracy (validation split)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, ncol=2, loc="lower right")
    ax.set_title("Where each design \"knows\" the class: linear probes on each stage's pooled features", fontsize=10)
    figure.tight_layout()
    return figure_to_image(figure)


@lru_cache(maxsize=16)
def _zoo_chart(versions: tuple) -> Image.Image | None:
    facts = {}
    for name, folder, *_ in versions:
        try:
            facts[name] = json.loads((Path(folder) / PROBES_JSON).read_text())
        except (OSError, ValueError):
            continue
    return probe_zoo_chart(facts) if facts else None


@lru_cache(maxsize=32)
def _curve(folder: str, mtime_ns: int, size: int, title: str) -> Image.Image | None:
    try:
        return probe_curve(json.loads((Path(folder) / PROBES_JSON).read_text()), title)
    except (OSError, ValueError, KeyError):
        return None


class InsideService:
    """The view's work; ``service`` is the app's ``ZooService`` (its store, its cached served predictions)."""

    def __init__(self, service):
        self.service = service

    def stages(self, loaded: LoadedModel):
        config = loaded.config
        return stages_of(loaded.name, json.dumps(config.get("arch_args", {}), sort_keys=True),
                         len(config["class_names"]), config.get("image_size", 32))

    def probes(self, loaded: LoadedModel) -> dict | None:
        version = _version(loaded.folder)
        return None if version is None else _probes(*version, loaded.weights_sha256)

    def inside(self, image, architecture) -> tuple[list, str] | None:
        """(gallery of (picture, caption), note) for the upload, one picture per stage; None without an image."""
        if image is None:
            return None
        _, loaded, prediction = self.service.served_prediction(image, architecture)
        names = loaded.config["class_names"]
        stages = list(self.stages(loaded))
        with loaded.lock:
            views = look_inside(loaded.model, prediction.x, stages, prediction.index)
        probes = self.probes(loaded)
        probe_predictions(probes, views, names)
        gallery, lines = [], []
        for view in views:
            guess = f" · probe: {view.probe[0]} {view.probe[1]:.0%}" if view.probe else ""
            gallery.append((draw_stage(view, names), f"{view.label} · {view.shape}{guess}"))
            lines.append(f"- **{view.label}** ({view.shape}): {view.sentence}"
                         + (f" Its linear probe says **{view.probe[0]}** ({view.probe[1]:.0%})." if view.probe else ""))
        probe_line = ("Each stage's linear probe (a logistic regression on its pooled output, fitted on "
                      f"{probes['train_images']:,} training images) guesses the class from that stage alone."
                      if probes else "No linear probes for these weights yet (`python -m tools.probes`).")
        note = (f"**{prediction.display_name}** predicts **{prediction.label}** ({prediction.confidence:.0%}); the "
                f"maps explain that class. {INTRO}{SELECTION}. {probe_line}\n\n" + "\n".join(lines))
        return gallery, note

    def depth_plot(self, architecture) -> Image.Image | None:
        """Probe accuracy against depth for one checkpoint; None without probes."""
        loaded = self.service.model(architecture)
        version = _version(loaded.folder)
        return None if version is None else _curve(*version, display_name(loaded.name))

    def zoo_chart(self) -> Image.Image | None:
        """All checkpoints' probe curves on one chart (zoo order); None when none has probes."""
        store = self.service.store
        versions = []
        for name, config in store.configs().items():
            version = _version(config["_folder"])
            if version is not None:
                versions.append((name, *version))
        return _zoo_chart(tuple(versions))
