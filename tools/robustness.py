"""Corruption robustness and calibration of one checkpoint, stored beside its weights.

    python -m tools.robustness checkpoints/resnet --data ../shared/data/cifar10-jpeg/train.tar.gz

On a seeded subset of the checkpoint's validation split: accuracy of the model alone (one view, no
test-time augmentation: a sixth of the cost) under each corruption of ``robustness.corruptions`` at each
severity; then the served probabilities' ECE, a temperature fitted on one half of a second subset and
measured on the other. Writes ``robustness.json`` (the command, image counts, the weights' SHA-256),
``robustness_bars.png`` and ``reliability.png``. If temperature scaling lowers ECE on the held-out half,
config.json gains ``temperature`` (served from then on) and ``ood`` is re-derived on the scaled
probabilities; otherwise any earlier ``temperature`` is removed and ``ood`` left as it is.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from architectures import CheckpointError, load_pretrained
from architectures.checkpoint import WEIGHTS_NAME, file_sha256
from preprocess import normalize, tta_views, views_to_probs
from robustness.calibration import confident_accuracy, fit_temperature, plot_reliability, reliability
from robustness.corruptions import CORRUPTIONS, LABELS, SEVERITIES, corrupt
from robustness.report import BARS_NAME, RELIABILITY_NAME, RESULT_NAME
from serve.ood import calibrate_probs, softmax_of, synthetic_ood
from serve.store import for_serving
from tools._config import update_config
from train.data import DataError, checkpoint_split, load_images

BATCH = 200
_CORRUPTED: dict[tuple, torch.Tensor] = {}  # one process measuring several checkpoints corrupts the images once


def corrupted(images: torch.Tensor, indices: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """``corrupt`` of the validation images at ``indices``, remembered for the next checkpoint on the same ones."""
    key = (tuple(indices.tolist()), name, severity, seed)
    if key not in _CORRUPTED:
        _CORRUPTED[key] = corrupt(images, name, severity, seed)
    return _CORRUPTED[key]


@torch.inference_mode()
def _logits(model, images: torch.Tensor, config: dict, views: bool) -> torch.Tensor:
    """Logits of uint8 images, one view each, or of every ``tta_views`` view (views x 2 x N, batch-wise)."""
    mean, std = torch.tensor(config["mean"]), torch.tensor(config["std"])
    out = []
    for start in range(0, len(images), BATCH):
        x = normalize(images[start:start + BATCH], mean, std)
        logits = model(tta_views(x) if views else x).float()
        out.append(logits.view(-1, len(x), logits.shape[-1]) if views else logits)
    return torch.cat(out, 1 if views else 0)


def subsets(config: dict, image_set, n_corrupt: int, n_calibrate: int, seed: int):
    """Validation indices for the corruptions and for calibration: prefixes of one seeded shuffle."""
    _, val_idx = checkpoint_split(config, image_set)
    order = val_idx[torch.randperm(len(val_idx), generator=torch.Generator().manual_seed(seed))]
    if n_corrupt > len(order) or n_calibrate > len(order) or n_corrupt < 1 or n_calibrate < 2:
        raise ValueError(f"need 1..{len(order)} corruption images and 2..{len(order)} calibration images")
    return order[:n_corrupt], order[:n_calibrate]


def condition_seed(seed: int, corruption: str, severity: int) -> int:
    """A separate, fixed random stream per corruption and severity."""
    return seed * 1000 + CORRUPTIONS.index(corruption) * 10 + severity


def corruption_accuracy(model, config: dict, image_set, indices: torch.Tensor, seed: int = 0,
                        corruptions=CORRUPTIONS, severities=SEVERITIES, progress: bool = True) -> dict:
    """{corruption: [accuracy per severity]} and the per-image share of conditions answered right, on the
    images of ``image_set`` at ``indices``."""
    images, labels = image_set.images[indices], image_set.labels[indices]
    accuracy, per_image = {}, torch.zeros(len(labels))
    bar = tqdm(total=len(corruptions) * len(severities), desc="corruptions", disable=not progress)
    for name in corruptions:
        accuracy[name] = []
        for severity in severities:
            x = corrupted(images, indices, name, severity, condition_seed(seed, name, severity))
            right = (_logits(model, x, config, views=False).argmax(1) == labels).float()
            accuracy[name].append(round(float(right.mean()), 4))
            per_image += right
            bar.update()
    bar.close()
    return {"accuracy": accuracy, "per_image": per_image / (len(corruptions) * len(severities))}


def calibration(model, config: dict, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Temperature fitted on the first half, ECE before and after on the second; the view logits kept."""
    per_view = _logits(model, images, config, views=True)  # views x N x classes
    n, half, classes = len(labels), len(labels) // 2, per_view.shape[-1]
    labels_np = labels.numpy()
    fit, held = per_view[:, :half].reshape(-1, classes), per_view[:, half:].reshape(-1, classes)
    temperature = fit_temperature(fit, labels_np[:half])
    served = views_to_probs(held, n - half).numpy()
    scaled = views_to_probs(held, n - half, temperature).numpy()
    before, after = reliability(served, labels_np[half:]), reliability(scaled, labels_np[half:])
    adopted = after["ece"] < before["ece"]
    sure, count = confident_accuracy(scaled if adopted else served, labels_np[half:])
    return {"temperature": round(temperature, 4), "temperature_adopted": bool(adopted),
            "ece_served": round(before["ece"], 4), "ece_scaled": round(after["ece"], 4),
            "fit_images": half, "measure_images": n - half,
            "confident_accuracy": None if sure is None else round(sure, 4), "confident_images": count,
            "reliability_served": before, "reliability_scaled": after, "_view_logits": per_view}


def measure(model, image_set, n_corrupt: int = 200, n_calibrate: int = 2000, seed: int = 0,
            progress: bool = True) -> dict:
    """Every figure of robustness.json for ``model`` (a served checkpoint) on ``image_set``; writes nothing."""
    config = model.config
    corrupt_idx, calib_idx = subsets(config, image_set, n_corrupt, n_calibrate, seed)
    images, labels = image_set.images[corrupt_idx], image_set.labels[corrupt_idx]
    clean = float((_logits(model, images, config, views=False).argmax(1) == labels).float().mean())
    scores = corruption_accuracy(model, config, image_set, corrupt_idx, seed, progress=progress)
    per_image = scores["per_image"]
    mean = float(per_image.mean())
    # Images are the sampling unit: the normal interval of the mean of each image's share of conditions.
    half_width = 1.96 * float(per_image.std(unbiased=True)) / math.sqrt(len(per_image))
    by_corruption = {name: float(np.mean(accs)) for name, accs in scores["accuracy"].items()}
    cal = calibration(model, config, image_set.images[calib_idx], image_set.labels[calib_idx])
    return {"clean_accuracy": round(clean, 4), "mean_corruption_accuracy": round(mean, 4),
            "mean_corruption_accuracy_ci95": [round(mean - half_width, 4), round(mean + half_width, 4)],
            "worst_corruption": min(by_corruption, key=by_corruption.get),
            "accuracy": scores["accuracy"],
            "corruption_error": {name: round(sum(1 - a for a in accs), 4) for name, accs in scores["accuracy"].items()},
            "calibration": cal, "_calib_idx": calib_idx}


def plot_bars(result: dict, path, title: str) -> None:
    """Accuracy per corruption (mean over severities, with severity 1 and 5 marked) beside clean accuracy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(result["accuracy"])
    means = [np.mean(result["accuracy"][n]) for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    ax.bar(range(len(names)), means, color="tab:blue", label="mean over severities 1-5")
    ax.scatter(range(len(names)), [result["accuracy"][n][0] for n in names], color="tab:green", zorder=3,
               s=14, label="severity 1")
    ax.scatter(range(len(names)), [result["accuracy"][n][-1] for n in names], color="tab:red", zorder=3,
               s=14, label="severity 5")
    ax.axhline(result["clean_accuracy"], color="black", linestyle="--", linewidth=1,
               label=f"clean {result['clean_accuracy']:.1%}")
    ax.set_xticks(range(len(names)), [LABELS[n] for n in names], rotation=40, ha="right", fontsize=8)
    ax.set(ylabel="accuracy", ylim=(0, 1), title=title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_json(path: Path, data: dict) -> None:
    """Atomically: a temporary file in the same folder, then a rename."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)


def run(folder, data: str, cache_dir: str = "data/cache", n_corrupt: int = 200, n_calibrate: int = 2000,
        seed: int = 0, command: str = "", image_set=None) -> dict:
    """Measure ``folder``'s checkpoint and write robustness.json, the plots and config.json's fields."""
    folder = Path(folder)
    model = for_serving(load_pretrained(folder))
    config = model.config
    if image_set is None:
        image_set = load_images(data, config["image_size"], cache_dir, progress=False)
    sha = file_sha256(folder / WEIGHTS_NAME)
    result = measure(model, image_set, n_corrupt, n_calibrate, seed)
    cal, calib_idx = result["calibration"], result.pop("_calib_idx")
    view_logits = cal.pop("_view_logits")
    name = config.get("display_name", config["arch"])
    plot_bars(result, folder / BARS_NAME, f"{name}: accuracy under each corruption ({n_corrupt} images)")
    plot_reliability(cal["reliability_served"], cal["reliability_scaled"], folder / RELIABILITY_NAME,
                     f"{name}: reliability ({cal['measure_images']} held-out images)")
    stored = {"command": command or f"python -m tools.robustness {folder} --data {data}",
              "weights_sha256": sha, "corruption_images": n_corrupt, "calibration_images": n_calibrate,
              "seed": seed, "prediction": "model alone (one view) under corruption; served probabilities "
              "(test-time augmentation) for calibration", "val_split": config.get("val_split", ""), **result}
    _write_json(folder / RESULT_NAME, stored)
    if cal["temperature_adopted"]:
        t = cal["temperature"]
        labels = image_set.labels[calib_idx].numpy()
        probs = views_to_probs(view_logits.reshape(-1, view_logits.shape[-1]), len(labels), t).numpy()
        ood_probs = softmax_of(model, synthetic_ood(size=config["image_size"]), config, temperature=t)
        entry = calibrate_probs(probs, ood_probs, labels)
        entry.update(weights_sha256=sha, temperature=t,
                     val_split=f"{len(labels)} images of: {config.get('val_split', '')}")
        update_config(folder, {"temperature": {"value": t, "weights_sha256": sha, "ece_served": cal["ece_served"],
                                               "ece_scaled": cal["ece_scaled"], "fitted_by": stored["command"]},
                               "ood": entry})
    else:
        update_config(folder, remove=("temperature",))
    return stored


def summary(name: str, result: dict) -> str:
    cal = result["calibration"]
    low, high = result["mean_corruption_accuracy_ci95"]
    return (f"{name}: clean {result['clean_accuracy']:.1%}, corrupted {result['mean_corruption_accuracy']:.1%} "
            f"(95% CI {low:.1%}-{high:.1%}), worst {result['worst_corruption']}; ECE {cal['ece_served']:.2%} -> "
            f"{cal['ece_scaled']:.2%} at T={cal['temperature']:.2f} "
            f"({'adopted' if cal['temperature_adopted'] else 'not adopted'})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.robustness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="+", help="checkpoint folders")
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg/train.tar.gz")
    parser.add_argument("--cache-dir", default="data/cache")
    parser.add_argument("--images", type=int, default=200, help="validation images per corruption and severity")
    parser.add_argument("--calibration-images", type=int, default=2000, help="validation images for calibration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "tools.robustness", "CHECKPOINT", "--data", args.data,
                          "--images", str(args.images), "--calibration-images", str(args.calibration_images),
                          "--seed", str(args.seed)])
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    image_sets = {}  # decoded once per image size
    for folder in args.checkpoint:
        try:
            size = json.loads((Path(folder) / "config.json").read_text())["image_size"]
            if size not in image_sets:
                image_sets[size] = load_images(args.data, size, args.cache_dir, progress=False)
            result = run(folder, args.data, args.cache_dir, args.images, args.calibration_images, args.seed,
                         command.replace("CHECKPOINT", shlex.quote(str(folder))), image_sets[size])
        except (CheckpointError, DataError, ValueError, OSError) as error:
            print(f"error: {folder}: {error}", file=sys.stderr)
            return 2
        print(summary(Path(folder).name, result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
