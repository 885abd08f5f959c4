"""Choose every trained checkpoint's out-of-distribution threshold on its validation split.

    python -m tools.calibrate_ood [--data ../shared/data/cifar10-jpeg/train.tar.gz] [--arch all]

Rebuilds the validation split each checkpoint was scored on (the same ``train.data.split_train_val`` call,
with the fraction and seed its config records), measures it with ``serve.ood.calibrate`` and writes
``serve/ood_thresholds.json``. Rerun it after retraining: an entry whose weights changed is ignored.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from architectures import check_name, list_models
from architectures.checkpoint import atomic_write_json
from train.data import load_images, split_train_val

from serve.ood import KEEP_FRACTION, THRESHOLDS_PATH, calibrate, load_thresholds
from serve.store import ModelStore, ModelUnavailable


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Choose each checkpoint's out-of-distribution threshold on "
                                                 "its validation split; write serve/ood_thresholds.json.")
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg/train.tar.gz",
                        help="the data the checkpoints were trained on (their validation split is carved from it)")
    parser.add_argument("--arch", default="all", help="one architecture, or all trained ones")
    parser.add_argument("--cache-dir", default="data/cache")
    parser.add_argument("--out", default=str(THRESHOLDS_PATH))
    args = parser.parse_args(argv)
    store = ModelStore(device="cpu")
    try:
        names = list_models() if args.arch == "all" else [check_name(args.arch)]
    except ValueError as error:
        parser.error(str(error))
    out = Path(args.out)
    existing = load_thresholds(out)
    image_sets = {}
    for name in names:
        try:
            loaded = store.get(name)
        except ModelUnavailable as error:
            print(f"skip {name}: {str(error).split(';')[0].removeprefix(name + ': ')}")
            continue
        config, recipe = loaded.config, loaded.config.get("recipe", {})
        key = (config["image_size"], recipe.get("val_fraction", 0.1), recipe.get("split_seed", 0))
        if key not in image_sets:
            image_set = load_images(args.data, key[0], args.cache_dir, progress=False)
            _, val_idx = split_train_val(image_set.labels, key[1], key[2])
            if image_set.class_names != config["class_names"]:
                raise SystemExit(f"{args.data} has classes {image_set.class_names}, {name} {config['class_names']}")
            image_sets[key] = (image_set.images[val_idx], image_set.labels[val_idx])
        entry = calibrate(loaded.model, config, *image_sets[key])
        entry.update(weights_sha256=loaded.weights_sha256, date=time.strftime("%Y-%m-%d"),
                     val_split=config.get("val_split", ""))
        existing[name] = entry
        c = entry["candidates"][entry["score"]]
        print(f"{name}: {entry['score']} threshold {entry['threshold']:.4f}; flags {c['val_flagged']:.1%} of "
              f"validation, {c['synthetic_ood_flagged']:.0%} of synthetic OOD")
    document = {
        "about": "Out-of-distribution thresholds per checkpoint, written by `python -m tools.calibrate_ood`; "
                 "see serve/ood.py.",
        "rule": f"threshold keeps {KEEP_FRACTION:.0%} of the validation split in distribution; the score "
                "(max_prob or entropy) is the one that flags more synthetic out-of-distribution images",
        "models": {name: existing[name] for name in list_models() if name in existing},
    }
    atomic_write_json(out, document)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
