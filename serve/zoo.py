"""What the app says about the architectures and their checkpoints: the dropdown, the card, the zoo table.

Everything comes from the registry (an architecture's own facts) and the checkpoint configs (what its
weights scored and how they were made); nothing is typed here per architecture.
"""
from __future__ import annotations

import json
import time
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from architectures import create_model, list_models, model_class
from architectures.checkpoint import WEIGHTS_NAME, file_sha256, hardware_summary, training_summary
from architectures.measure import count_macs
from preprocess import ImageDecodeError, load_image
from robustness.report import BARS_NAME, BASELINE, RELIABILITY_NAME, card_sentence, load_result, relative_mce

from . import zoo_plots
from .store import ModelStore, ModelUnavailable

ZOO_HEADERS = ["architecture", "name", "val accuracy", "without TTA", "corruption accuracy", "ECE", "params (M)",
               "MMACs", "size (MB)",
               "latency (ms)", "epochs", "training time (min)", "hardware"]


def served_accuracy(config: dict):
    """Validation accuracy as the app predicts (shifted and mirrored copies averaged); the model-alone
    figure for a checkpoint that does not record it."""
    return config.get("val_accuracy_tta", config.get("val_accuracy"))


@lru_cache(maxsize=64)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


def robustness_result(config: dict | None) -> dict | None:
    """The checkpoint's robustness.json (``tools.robustness``) when it was measured on these weights, else None."""
    if not config:
        return None
    weights = Path(config["_folder"]) / WEIGHTS_NAME
    try:
        stat = weights.stat()
    except OSError:
        return None
    return load_result(config["_folder"], _sha256(str(weights), stat.st_mtime_ns, stat.st_size))


def robustness_line(store: ModelStore, name: str, config: dict) -> str:
    """The card's sentence on corruptions and calibration, with the error relative to AlexNet's (mCE)."""
    result = robustness_result(config)
    if result is None:
        return "not measured for these weights yet (`python -m tools.robustness`)"
    mce = relative_mce(result, robustness_result(store.config(BASELINE)))
    return card_sentence(result) + ("" if mce is None else f" Corruption error relative to AlexNet (mCE): {mce:.0%}.")


def display_name(name: str) -> str:
    """The architecture's name for people (the registry's), whatever its checkpoint's config says."""
    return model_class(name).display_name or name


def architecture_choices(configs: dict[str, dict]) -> list[tuple[str, str]]:
    """(label, name) of every architecture in the zoo's order, with its served accuracy where trained."""
    choices = []
    for name in list_models():
        if name in configs:
            choices.append((f"{display_name(name)}  ({served_accuracy(configs[name]) or 0:.1%})", name))
        else:
            choices.append((f"{display_name(name)}  (no checkpoint yet)", name))
    return choices


def best_architecture(configs: dict[str, dict]) -> str:
    """The checkpoint with the highest validation accuracy as served; the zoo's first model when there is none."""
    if not configs:
        return list_models()[0]
    return max(configs, key=lambda name: served_accuracy(configs[name]) or 0.0)


def _minutes(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def ood_description(entry: dict | None) -> str:
    """The out-of-distribution rule of a checkpoint in a visitor's words, for the card."""
    if not entry:
        return "not calibrated for these weights, so no image is flagged"
    keep = entry.get("keep_fraction", 0.95)
    if entry.get("score") == "max_prob":
        rule = f"its top class gets less than {entry['threshold']:.0%} of the probability"
    else:
        rule = (f"its probabilities are spread too evenly over the classes (entropy above "
                f"{entry['threshold']:.2f} nats)")
    return (f"an upload is flagged as looking like none of the classes when {rule}: that happens to only "
            f"{1 - keep:.0%} of the validation images")


def architecture_card(store: ModelStore, name: str) -> str:
    """Markdown: the architecture's key idea and paper, and what its checkpoint scored and cost."""
    cls = model_class(name)
    config = store.config(name)
    lines = [f"### {display_name(name)}", "", cls.key_idea, ""]
    if config is None and store.has_local(name):
        lines.append(f"**Its checkpoint cannot be used** (`{name}/config.json` is invalid); choose it to see why.")
    elif config is None:
        lines.append(f"**No checkpoint yet** for `{name}`: it appears here once trained "
                     f"(`python -m train --arch {name}`).")
    else:
        # A list, not a table: a two-column Markdown table needs a header row and squeezes its first column.
        lines += [
            f"- **Parameters:** {config.get('params', 0) / 1e6:.2f} M",
            f"- **Validation accuracy:** **{served_accuracy(config) or 0:.2%}** averaged over shifted and mirrored "
            f"copies, as served; {config.get('val_accuracy', 0):.2%} for the image alone "
            f"({config.get('val_split', 'held-out split')})",
            f"- **Training:** {config.get('epochs', '?')} epochs, {_minutes(config.get('train_seconds'))}; "
            f"{training_summary(config)}; on {hardware_summary(config)}",
            f"- **Out-of-distribution flag:** {ood_description(store.ood_entry(name))}",
            f"- **Robustness and calibration:** {robustness_line(store, name, config)}",
        ]
    if cls.paper:
        lines += ["", f"Paper: [{cls.paper}]({cls.paper})"]
    return "\n".join(lines)


@cache
def _macs(name: str, arch_args: str, image_size: int) -> float:
    """Multiply-accumulates of one forward pass of a fresh model (the README table's own count)."""
    return float(count_macs(create_model(name, **json.loads(arch_args)).eval(), image_size))


class ZooTable:
    """The Model zoo tab's table, and the latency column once measured on this server."""

    def __init__(self, store: ModelStore):
        self.store = store
        self.latency_ms: dict[str, float] = {}
        self._plots: dict[tuple, tuple] = {}  # drawn once per set of checkpoints (a page load asks each time)

    def plots(self, frame: pd.DataFrame) -> tuple:
        """(accuracy against parameters, accuracy by the paper's year, accuracy against corruption severity)."""
        key = tuple(map(tuple, frame[["name", "architecture", "val accuracy", "params (M)",
                                      "corruption accuracy"]].itertuples(index=False)))
        if key not in self._plots:
            self._plots = {key: (zoo_plots.accuracy_vs_parameters(frame),
                                 zoo_plots.evolution(frame, zoo_plots.paper_years(frame["name"])),
                                 zoo_plots.robustness_by_severity(self.severity_curves(frame["name"])))}
        return self._plots[key]

    def severity_curves(self, names) -> dict[str, list[float]]:
        """Display name -> [clean, mean accuracy at severity 1..5] of every measured checkpoint."""
        curves = {}
        for name in names:
            result = robustness_result(self.store.config(name))
            if result is not None:
                by_severity = np.mean(list(result["accuracy"].values()), axis=0)
                curves[display_name(name)] = [result["clean_accuracy"], *map(float, by_severity)]
        return curves

    def frame(self, configs: dict[str, dict]) -> pd.DataFrame:
        rows = []
        for name, config in configs.items():
            weights = Path(config["_folder"]) / "model.safetensors"
            result = robustness_result(config) or {}
            rows.append({
                "architecture": display_name(name),
                "name": name,
                "val accuracy": served_accuracy(config),
                "without TTA": config.get("val_accuracy"),
                "corruption accuracy": result.get("mean_corruption_accuracy"),
                "ECE": (result["calibration"]["ece_scaled"] if result["calibration"]["temperature_adopted"]
                        else result["calibration"]["ece_served"]) if result else None,
                "params (M)": round(config.get("params", 0) / 1e6, 3),
                "MMACs": round(_macs(name, json.dumps(config.get("arch_args", {}), sort_keys=True),
                                     config.get("image_size", 32)) / 1e6, 1),
                "size (MB)": round(weights.stat().st_size / 1e6, 2) if weights.is_file() else None,
                "latency (ms)": self.latency_ms.get(name),
                "epochs": config.get("epochs"),
                "training time (min)": round(config.get("train_seconds", 0) / 60, 1),
                "hardware": hardware_summary(config),  # each machine once: the card and config.json say more
            })
        frame = pd.DataFrame(rows, columns=ZOO_HEADERS)
        return frame.sort_values("val accuracy", ascending=False) if rows else frame

    def note(self, configs: dict[str, dict]) -> str:
        missing = [name for name in list_models() if name not in configs]
        return (f"{len(configs)} of {len(list_models())} architectures have a checkpoint."
                + (f" Not yet: {', '.join(missing)}." if missing else "")
                + f" Latency: median of 20 forward passes of one image on this server's "
                  f"{self.store.device.type.upper()}, measured in the background after start-up"
                  + ("" if all(name in self.latency_ms for name in configs) else " (still being measured: "
                     "press Reload checkpoints in a few seconds)")
                  + ". MMACs: multiply-accumulates per image.")

    def measure_latency(self, progress=None) -> None:
        """Median forward-pass time of every available model on this machine (one image), into the table."""
        names = self.store.available(fetch=bool(self.store.repo))
        for i, name in enumerate(names):
            if progress is not None:
                progress(i / max(1, len(names)), name)
            try:
                loaded = self.store.get(name)
            except ModelUnavailable:
                continue  # a broken checkpoint has no latency; its own error shows where it is chosen
            size = loaded.config.get("image_size", 32)
            x = torch.zeros(1, 3, size, size, device=self.store.device)
            times = []
            with loaded.lock, torch.inference_mode():
                for repeat in range(25):
                    start = time.perf_counter()
                    loaded.model(x)
                    if self.store.device.type == "cuda":
                        torch.cuda.synchronize()
                    if repeat >= 5:  # the first runs warm caches up
                        times.append((time.perf_counter() - start) * 1000)
            self.latency_ms[name] = round(float(np.median(times)), 2)


def robustness_picture(folder: Path):
    """The per-corruption bars and the reliability diagram side by side, or None before they are drawn."""
    pictures = [checkpoint_picture(folder, name) for name in (BARS_NAME, RELIABILITY_NAME)]
    if None in pictures:
        return None
    height = max(p.height for p in pictures)
    joined = Image.new("RGB", (sum(p.width for p in pictures), height), "white")
    joined.paste(pictures[0], (0, 0))
    joined.paste(pictures[1], (pictures[0].width, 0))
    return joined


def checkpoint_picture(folder: Path, filename: str):
    """A PNG the training or finishing step wrote beside the weights (curves, confusion), or None."""
    path = Path(folder) / filename
    if not path.is_file():
        return None
    try:
        return load_image(path, max_side=1400)
    except ImageDecodeError:
        return None
