"""The architectures and their checkpoints as the app shows them: the dropdown, the card, the zoo table, its plots.

Everything comes from the registry (an architecture's own facts), the checkpoint configs (what its weights scored
and how they were made) and the results measured beside the weights (robustness.json, adversarial.json, checked
against the weights' SHA-256), and the transfer matrix in bench/; nothing is typed here per architecture. This
module computes and caches; the words (headers, the card, the notes) are ``serve.wording``'s.
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
from architectures.checkpoint import WEIGHTS_NAME, file_sha256, hardware_summary
from architectures.measure import count_macs
from preprocess import ImageDecodeError, load_image
from robustness import adversarial_report
from robustness.report import BARS_NAME, BASELINE, RELIABILITY_NAME, load_result, relative_mce

from . import wording, zoo_plots
from .store import ModelStore, ModelUnavailable
from .wording import ZOO_HEADERS, display_name

__all__ = ["ZOO_HEADERS", "ZooTable", "adversarial_result", "architecture_card", "architecture_choices",
           "best_architecture", "checkpoint_picture", "display_name", "robustness_picture", "robustness_result",
           "served_accuracy", "transfer_result"]
BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"  # where tools.adversarial writes the transfer matrix


def served_accuracy(config: dict):
    """Validation accuracy as the app predicts (shifted and mirrored copies averaged); the model-alone
    figure for a checkpoint that does not record it."""
    return config.get("val_accuracy_tta", config.get("val_accuracy"))


@lru_cache(maxsize=64)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


def weights_sha256(config: dict | None) -> str | None:
    """The SHA-256 of the checkpoint's weights (hashed once per file version), or None without weights."""
    if not config:
        return None
    weights = Path(config["_folder"]) / WEIGHTS_NAME
    try:
        stat = weights.stat()
    except OSError:
        return None
    return _sha256(str(weights), stat.st_mtime_ns, stat.st_size)


def robustness_result(config: dict | None) -> dict | None:
    """The checkpoint's robustness.json (``tools.robustness``) when it was measured on these weights, else None."""
    sha = weights_sha256(config)
    return None if sha is None else load_result(config["_folder"], sha)


def adversarial_result(config: dict | None) -> dict | None:
    """The checkpoint's adversarial.json (``tools.adversarial``) when it was measured on these weights, finished
    or not, else None."""
    sha = weights_sha256(config)
    return None if sha is None else adversarial_report.load_result(config["_folder"], sha)


def transfer_result(store: ModelStore, bench_dir: Path = BENCH_DIR) -> dict | None:
    """The transfer matrix (``python -m tools.adversarial --transfer``) when every architecture in it is served
    with the weights it was measured on, else None (a matrix of other weights says nothing of these)."""
    transfer = adversarial_report.load_transfer(Path(bench_dir) / adversarial_report.TRANSFER_NAME)
    if transfer is None:
        return None
    measured_on = transfer.get("weights_sha256", {})
    for name in transfer["architectures"]:
        try:
            config = store.config(name)
        except ValueError:  # a name the registry no longer knows
            return None
        if weights_sha256(config) is None or weights_sha256(config) != measured_on.get(name):
            return None
    return transfer


def attacked_accuracy(config: dict | None) -> tuple[float | None, str | None]:
    """The zoo table's attacked column: the accuracy under the stronger attack at ``TABLE_BUDGET``, as served
    when that is measured, else of the model alone, and which of the two; (None, None) when neither is."""
    result = adversarial_result(config)
    for mode in ("served", "alone"):
        value = adversarial_report.worst_case(result, mode).get(adversarial_report.TABLE_BUDGET) if result else None
        if value is not None:
            return value, mode
    return None, None


def architecture_choices(configs: dict[str, dict]) -> list[tuple[str, str]]:
    """(label, name) of every architecture in the zoo's order, with its served accuracy where trained."""
    return [(wording.choice_label(name, served_accuracy(configs[name]) if name in configs else None,
                                  name in configs), name) for name in list_models()]


def best_architecture(configs: dict[str, dict]) -> str:
    """The checkpoint with the highest validation accuracy as served; the zoo's first model when there is none."""
    if not configs:
        return list_models()[0]
    return max(configs, key=lambda name: served_accuracy(configs[name]) or 0.0)


def architecture_card(store: ModelStore, name: str) -> str:
    """Markdown: the architecture's key idea and paper, and what its checkpoint scored and cost (its words are
    ``wording.card_markdown``'s)."""
    cls = model_class(name)
    config = store.config(name)
    facts = None
    if config is not None:
        robustness = robustness_result(config)
        facts = {"served_accuracy": served_accuracy(config), "ood": store.ood_entry(name), "robustness": robustness,
                 "mce": relative_mce(robustness, robustness_result(store.config(BASELINE))) if robustness else None,
                 "adversarial": adversarial_result(config)}
    return wording.card_markdown(name, cls.key_idea, cls.paper, config, store.has_local(name), facts)


@cache
def _macs(name: str, arch_args: str, image_size: int) -> float:
    """Multiply-accumulates of one forward pass of a fresh model (the README table's own count)."""
    return float(count_macs(create_model(name, **json.loads(arch_args)).eval(), image_size))


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class ZooTable:
    """The Model zoo tab's table, its plots and notes, and the latency column once measured on this server."""

    def __init__(self, store: ModelStore, bench_dir: Path = BENCH_DIR):
        self.store = store
        self.bench_dir = Path(bench_dir)
        self.latency_ms: dict[str, float] = {}
        self._plots: dict[tuple, tuple] = {}  # drawn once per set of checkpoints and results (a page load asks)

    def _results_signature(self, names) -> tuple:
        """When the weights and the results the plots read were last written: a new result redraws them."""
        signature = []
        for name in names:
            config = self.store.config(name)
            folder = Path(config["_folder"]) if config else None
            signature.append((name, *(None if folder is None else _mtime(folder / file) for file in (
                WEIGHTS_NAME, "robustness.json", adversarial_report.RESULT_NAME))))
        return (*signature, _mtime(self.bench_dir / adversarial_report.TRANSFER_NAME))

    def plots(self, frame: pd.DataFrame) -> tuple:
        """(accuracy against parameters, accuracy by the paper's year, accuracy against corruption severity,
        accuracy under attack against epsilon, the transfer heatmap), as PIL images."""
        names = list(frame["name"])
        key = (tuple(map(tuple, frame[list(zoo_plots.TABLE_COLUMNS)].itertuples(index=False))),
               self._results_signature(names))
        if key not in self._plots:
            transfer = transfer_result(self.store, self.bench_dir)
            labels = None if transfer is None else {name: display_name(name) for name in transfer["architectures"]}
            self._plots = {key: (zoo_plots.accuracy_vs_parameters(frame),
                                 zoo_plots.evolution(frame, zoo_plots.paper_years(names)),
                                 zoo_plots.robustness_by_severity(self.severity_curves(names)),
                                 zoo_plots.adversarial_by_epsilon(self.adversarial_curves(names)),
                                 zoo_plots.transfer_heatmap(transfer, labels))}
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

    def adversarial_curves(self, names) -> dict[str, dict[str, list[float]]]:
        """"served" and "alone" -> {display name: [unattacked accuracy, accuracy under the stronger attack at each
        finished budget]} of every checkpoint measured on its weights; a name measured only part-way is marked."""
        curves: dict[str, dict[str, list[float]]] = {mode: {} for mode in adversarial_report.MODES}
        for name in names:
            result = adversarial_result(self.store.config(name))
            for mode in adversarial_report.MODES:
                curve = adversarial_report.worst_case(result, mode) if result else {}
                if curve:
                    label = display_name(name) + ("" if len(curve) == len(adversarial_report.BUDGETS) else
                                                  wording.SO_FAR)
                    curves[mode][label] = [result["clean"][mode], *curve.values()]
        return curves

    def adversarial_note(self) -> str:
        """Markdown under the attack plots: why attacks work, worst against average case, what is measured, and
        the transfer sentence (``wording.adversarial_note``)."""
        configs = self.store.configs()
        measured, under_way, unmeasured, settings = {}, [], [], []
        for name, config in configs.items():
            result = adversarial_result(config)
            mode = adversarial_report.finished_mode(result)
            if mode is not None:
                measured[display_name(name)] = mode
                settings.append(result.get("settings", {"images": result["images"]}))
            else:
                (under_way if result else unmeasured).append(display_name(name))
        return wording.adversarial_note(measured, under_way, unmeasured, settings,
                                        transfer_result(self.store, self.bench_dir))

    def frame(self, configs: dict[str, dict]) -> pd.DataFrame:
        """The zoo table (``wording.ZOO_HEADERS``), the most accurate as served first."""
        rows = []
        for name, config in sorted(configs.items(), key=lambda item: -(served_accuracy(item[1]) or -1)):
            weights = Path(config["_folder"]) / WEIGHTS_NAME
            result = robustness_result(config) or {}
            calibration = result.get("calibration")
            values = [  # in the order of ZOO_HEADERS
                display_name(name), name, served_accuracy(config), config.get("val_accuracy"),
                result.get("mean_corruption_accuracy"),
                attacked_accuracy(config)[0],
                (calibration["ece_scaled"] if calibration["temperature_adopted"] else calibration["ece_served"])
                if calibration else None,
                round(config.get("params", 0) / 1e6, 3),
                round(_macs(name, json.dumps(config.get("arch_args", {}), sort_keys=True),
                            config.get("image_size", 32)) / 1e6, 1),
                round(weights.stat().st_size / 1e6, 2) if weights.is_file() else None,
                self.latency_ms.get(name),
                config.get("epochs"),
                round(config.get("train_seconds", 0) / 60, 1),
                hardware_summary(config),  # each machine once: the card and config.json say more
            ]
            rows.append(dict(zip(ZOO_HEADERS, values, strict=True)))
        return pd.DataFrame(rows, columns=ZOO_HEADERS)

    def note(self, configs: dict[str, dict]) -> str:
        """The note above the table (``wording.zoo_note``)."""
        attacked = {display_name(name): mode for name, config in configs.items()
                    if (mode := attacked_accuracy(config)[1]) is not None}
        return wording.zoo_note(len(configs), [name for name in list_models() if name not in configs],
                                self.store.device.type.upper(), all(name in self.latency_ms for name in configs),
                                attacked)

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
