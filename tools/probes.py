"""Linear probes per stage (Alain and Bengio, 2016): how well each stage's features already tell the classes.

    python -m tools.probes --arch resnet --data ../shared/data/cifar10-jpeg/train.tar.gz
    python -m tools.probes --arch all --data ... --cache-dir /work/main/data/cache

For every stage of the checkpoint's diagram (``explain.diagram``; the same names, in forward order) a
logistic regression on the stage's globally pooled output (features standardised on the training subset)
is fitted on ``--train-images`` images of the checkpoint's training split (the same number of each class,
seeded) and scored on its whole validation split, which training never saw. Written beside the weights:
``probes.json`` (the command, the image counts, the weights' SHA-256, accuracy per stage) and
``probes.safetensors`` (each probe's weights, which the app applies to an upload). ``tools.finish_checkpoint``
runs it as its last step: about a minute per architecture on one CPU thread with the default 5,000 images.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from architectures import CheckpointError, check_name, list_models, load_pretrained
from architectures.checkpoint import WEIGHTS_NAME, atomic_save_tensors, atomic_write_json, file_sha256
from explain.diagram import diagram_facts
from explain.inside import PROBES_JSON, PROBES_WEIGHTS, pooled_features, stage_label
from preprocess import normalize
from serve.store import for_serving
from train.data import DataError, ImageSet, checkpoint_split, load_images

TRAIN_IMAGES = 5000   # training images the probes are fitted on (500 per CIFAR-10 class): fits the CPU budget
SEED = 0              # which training images
BATCH = 250           # images per forward pass
PROBE_C = 1.0         # inverse L2 strength of the logistic regression, on standardised features
METHOD = ("logistic regression (scikit-learn, lbfgs, C=1) on each stage's globally averaged output, features "
          "standardised on the training subset")


def balanced_subset(labels: torch.Tensor, indices: torch.Tensor, count: int, seed: int = SEED) -> torch.Tensor:
    """``count`` of ``indices`` with the same number of each class (as near as ``count`` allows), seeded."""
    generator = torch.Generator().manual_seed(seed)
    shuffled = indices[torch.randperm(len(indices), generator=generator)]
    classes = labels[shuffled].unique().tolist()
    per_class = max(1, count // len(classes))
    picked = [shuffled[labels[shuffled] == c][:per_class] for c in classes]
    return torch.cat(picked).sort().values


def stage_features(model, stages, images_uint8: torch.Tensor, mean, std, desc: str = "") -> list[np.ndarray]:
    """Every stage's pooled features of ``images_uint8``: one N x C float32 array per stage."""
    device = next(model.parameters()).device
    mean, std = torch.as_tensor(mean, device=device).float(), torch.as_tensor(std, device=device).float()
    parts: list[list[np.ndarray]] = [[] for _ in stages]
    for start in tqdm(range(0, len(images_uint8), BATCH), desc=desc, unit="batch", leave=False):
        batch = normalize(images_uint8[start:start + BATCH].to(device), mean, std)
        for part, pooled in zip(parts, pooled_features(model, stages, batch)):
            part.append(pooled.cpu().numpy())
    return [np.concatenate(part) for part in parts]


def fit_probe(train_x: np.ndarray, train_y: np.ndarray):
    """(fitted LogisticRegression, feature mean, feature scale) on standardised features."""
    from sklearn.linear_model import LogisticRegression
    mean, scale = train_x.mean(0), train_x.std(0) + 1e-6
    probe = LogisticRegression(C=PROBE_C, max_iter=1000)
    with warnings.catch_warnings():  # a stage that separates the subset perfectly converges slowly: still a probe
        warnings.simplefilter("ignore")
        probe.fit((train_x - mean) / scale, train_y)
    return probe, mean, scale


def compute_probes(model, image_set: ImageSet, train_images: int = TRAIN_IMAGES, command: str = "",
                   weights_sha256: str = "") -> tuple[dict, dict[str, torch.Tensor]]:
    """(probes.json's facts, probes.safetensors's tensors) of ``model`` (``model.config`` its config)."""
    config = model.config
    if train_images < len(image_set.class_names):
        raise ValueError(f"--train-images must be at least the number of classes ({len(image_set.class_names)})")
    stages = diagram_facts(model, config["image_size"])
    train_idx, val_idx = checkpoint_split(config, image_set)
    train_idx = balanced_subset(image_set.labels, train_idx, train_images)
    model.eval()
    train_f = stage_features(model, stages, image_set.images[train_idx], config["mean"], config["std"], "train")
    val_f = stage_features(model, stages, image_set.images[val_idx], config["mean"], config["std"], "validation")
    train_y, val_y = image_set.labels[train_idx].numpy(), image_set.labels[val_idx].numpy()
    rows, tensors = [], {}
    for i, (stage, tx, vx) in enumerate(tqdm(list(zip(stages, train_f, val_f)), desc="probes", unit="stage")):
        probe, mean, scale = fit_probe(tx, train_y)
        rows.append({"stage": stage_label(stage), "depth": i + 1, "out_shape": list(stage.out_shape),
                     "features": int(tx.shape[1]),
                     "train_accuracy": round(float(probe.score((tx - mean) / scale, train_y)), 4),
                     "val_accuracy": round(float(probe.score((vx - mean) / scale, val_y)), 4)})
        tensors.update({f"stage{i}.coef": torch.tensor(probe.coef_, dtype=torch.float32),
                        f"stage{i}.intercept": torch.tensor(probe.intercept_, dtype=torch.float32),
                        f"stage{i}.mean": torch.tensor(mean, dtype=torch.float32),
                        f"stage{i}.scale": torch.tensor(scale, dtype=torch.float32)})
    facts = {"command": command, "weights_sha256": weights_sha256, "method": METHOD,
             "train_images": int(len(train_idx)), "val_images": int(len(val_idx)), "seed": SEED,
             "val_split": config.get("val_split", ""), "stages": rows}
    return facts, tensors


def write_probes(model, image_set: ImageSet, folder, train_images: int = TRAIN_IMAGES, command: str = "") -> dict:
    """Fit the probes of the checkpoint in ``folder`` and write probes.json and probes.safetensors (atomically)."""
    folder = Path(folder)
    sha = file_sha256(folder / WEIGHTS_NAME)
    facts, tensors = compute_probes(model, image_set, train_images, command, sha)
    atomic_save_tensors(tensors, folder / PROBES_WEIGHTS, {"weights_sha256": sha})
    atomic_write_json(folder / PROBES_JSON, facts)
    return facts


def summary(name: str, facts: dict) -> str:
    accuracies = " → ".join(f"{row['val_accuracy']:.0%}" for row in facts["stages"])
    return f"{name}: probes on {facts['train_images']} training / {facts['val_images']} validation images: {accuracies}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.probes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="all", help="one architecture, or all trained ones")
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg/train.tar.gz", help="the data it was trained on")
    parser.add_argument("--checkpoints", default="checkpoints", help="folder holding one folder per architecture")
    parser.add_argument("--cache-dir", default="data/cache", help="decoded-image cache of train.data")
    parser.add_argument("--train-images", type=int, default=TRAIN_IMAGES, help="training images the probes fit on")
    args = parser.parse_args(argv)
    try:
        names = list_models() if args.arch == "all" else [check_name(args.arch)]
    except ValueError as error:
        parser.error(str(error))
    command = shlex.join(["python", "-m", "tools.probes", *(sys.argv[1:] if argv is None else argv)])
    image_sets = {}
    for name in names:
        folder = Path(args.checkpoints) / name
        try:
            model = for_serving(load_pretrained(folder))
            size = model.config["image_size"]
            if size not in image_sets:
                image_sets[size] = load_images(args.data, size, args.cache_dir, progress=False)
            facts = write_probes(model, image_sets[size], folder, args.train_images, command)
        except CheckpointError as error:
            print(f"skip {name}: {error}")
            continue
        except (DataError, ValueError) as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            return 2
        print(summary(name, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
