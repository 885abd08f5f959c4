"""Choose each trained checkpoint's out-of-distribution threshold on its validation split.

    python -m tools.calibrate_ood [--data ../shared/data/cifar10-jpeg/train.tar.gz] [--arch all]

Rebuilds the validation split each checkpoint was scored on (the same ``train.data.split_train_val`` call,
with the fraction and seed its config records), measures it with ``serve.ood.calibrate`` and writes the
entry into the checkpoint's config.json as ``"ood"``, with the SHA-256 of the weights it was measured on.
Rerun it after retraining (``tools.finish_checkpoint`` does): an entry whose weights changed is ignored.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from architectures import CheckpointError, check_name, list_models, load_pretrained
from architectures.checkpoint import WEIGHTS_NAME, file_sha256
from serve.ood import calibrate
from serve.store import for_serving
from tools._config import update_config
from train.data import DataError, ImageSet, checkpoint_split, load_images


def ood_entry(model, image_set: ImageSet, weights_sha256: str) -> dict:
    """``serve.ood.calibrate`` on the validation split of ``image_set`` that ``model.config`` records, with
    the weights' SHA-256 and the split's description."""
    config = model.config
    _, val_idx = checkpoint_split(config, image_set)
    entry = calibrate(model, config, image_set.images[val_idx], image_set.labels[val_idx])
    entry.update(weights_sha256=weights_sha256, val_split=config.get("val_split", ""))
    return entry


def describe(name: str, entry: dict) -> str:
    c = entry["candidates"][entry["score"]]
    return (f"{name}: {entry['score']} threshold {entry['threshold']:.4f}; flags {c['val_flagged']:.1%} of "
            f"validation, {c['synthetic_ood_flagged']:.0%} of synthetic OOD")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.calibrate_ood", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg/train.tar.gz",
                        help="the data the checkpoints were trained on (their validation split is carved from it)")
    parser.add_argument("--arch", default="all", help="one architecture, or all trained ones")
    parser.add_argument("--checkpoints", default="checkpoints", help="folder holding one folder per architecture")
    parser.add_argument("--cache-dir", default="data/cache")
    args = parser.parse_args(argv)
    try:
        names = list_models() if args.arch == "all" else [check_name(args.arch)]
    except ValueError as error:
        parser.error(str(error))
    image_sets = {}  # decoded once per image size
    for name in names:
        folder = Path(args.checkpoints) / name
        try:
            model = for_serving(load_pretrained(folder))  # the layout the app serves
            size = model.config["image_size"]
            if size not in image_sets:
                image_sets[size] = load_images(args.data, size, args.cache_dir, progress=False)
            entry = ood_entry(model, image_sets[size], file_sha256(folder / WEIGHTS_NAME))
        except CheckpointError as error:
            print(f"skip {name}: {error}")
            continue
        except DataError as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            return 2
        path = update_config(folder, {"ood": entry})
        print(f"{describe(name, entry)} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
