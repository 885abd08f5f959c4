"""Compute a checkpoint's SE class profiles and store them beside it (``se_profiles.safetensors``).

    python -m tools.se_profiles --checkpoint checkpoints/senet --data ../shared/data/cifar10-jpeg/train.tar.gz

The profiles are means over the checkpoint's validation split: the same ``split_train_val`` with the
fraction and seed its recipe recorded, so no training image is used.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from architectures import load_pretrained
from explain.se import compute_se_profiles, has_se, save_se_profiles
from train.data import DataError, ImageSet, checkpoint_split, load_images


def write_se_profiles(model, image_set: ImageSet, folder) -> tuple[Path, dict]:
    """Profiles of ``model`` (an SE model; ``model.config`` its config) over its validation split of
    ``image_set``, saved into ``folder``: (path, profiles)."""
    config = model.config
    _, val_idx = checkpoint_split(config, image_set)
    profiles = compute_se_profiles(model, image_set.images[val_idx], image_set.labels[val_idx],
                                   torch.tensor(config["mean"]), torch.tensor(config["std"]), config["class_names"])
    return save_se_profiles(profiles, folder), profiles


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.se_profiles", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument("--cache-dir", default="data/cache", help="decoded-image cache of train.data")
    args = parser.parse_args(argv)

    model = load_pretrained(args.checkpoint)
    if not has_se(model):
        print(f"{model.config['arch']} has no squeeze-and-excitation blocks; nothing to write", file=sys.stderr)
        return 1
    image_set = load_images(args.data, model.config["image_size"], cache_dir=args.cache_dir, progress=False)
    try:
        path, profiles = write_se_profiles(model, image_set, args.checkpoint)
    except DataError as error:
        print(f"{args.data}: {error}", file=sys.stderr)
        return 1
    print(f"{len(profiles['blocks'])} SE blocks, {int(sum(profiles['counts']))} validation images -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
