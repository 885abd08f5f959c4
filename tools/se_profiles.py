"""Compute a checkpoint's SE class profiles and store them beside it (``se_profiles.safetensors``).

    python -m tools.se_profiles --checkpoint checkpoints/senet --data ../shared/data/cifar10-jpeg/train.tar.gz

The profiles are means over the checkpoint's validation split: the same ``split_train_val`` with the
fraction and seed its recipe recorded, so no training image is used.
"""
from __future__ import annotations

import argparse
import sys

import torch

from architectures import load_pretrained
from explain.se import compute_se_profiles, has_se, save_se_profiles
from train.data import load_images, split_train_val


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument("--cache-dir", default="data/cache", help="decoded-image cache of train.data")
    args = parser.parse_args(argv)

    model = load_pretrained(args.checkpoint)
    if not has_se(model):
        print(f"{model.config['arch']} has no squeeze-and-excitation blocks; nothing to write", file=sys.stderr)
        return 1
    config = model.config
    recipe = config.get("recipe", {})
    image_set = load_images(args.data, config["image_size"], cache_dir=args.cache_dir, progress=False)
    if image_set.class_names != config["class_names"]:
        print(f"{args.data} has classes {image_set.class_names}, the checkpoint {config['class_names']}",
              file=sys.stderr)
        return 1
    _, val_idx = split_train_val(image_set.labels, recipe.get("val_fraction", 0.1), recipe.get("split_seed", 0))
    profiles = compute_se_profiles(model, image_set.images[val_idx], image_set.labels[val_idx],
                                   torch.tensor(config["mean"]), torch.tensor(config["std"]), config["class_names"])
    path = save_se_profiles(profiles, args.checkpoint)
    print(f"{len(profiles['blocks'])} SE blocks, {len(val_idx)} validation images -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
