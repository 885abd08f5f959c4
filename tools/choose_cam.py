"""Choose the CAM setting that explains a checkpoint most faithfully: every method at every CAM layer
(occlusion, which takes no layer, once).

    python -m tools.choose_cam --checkpoint checkpoints/efficientnet --data ../shared/data/cifar10-jpeg/train.tar.gz

Run it again whenever a checkpoint is retrained: which method and depth explain a model best changes with
its weights. Each setting gets, on ``--images`` validation images that the tests do not use (the ones after
tests/test_explain.py's first ``--skip`` of the same seeded shuffle):

- the deletion check (``faithfulness.deletion_drops``): how far the class's probability falls when the
  map's hottest quarter is blanked, against the central square and random squares of that area;
  and against the map of the same method and layer from randomly initialised weights (``faithfulness.randomised_twin``),
  blanked in the same way. That last baseline catches maps whose drop comes from their shape alone: a
  shallow layer's map picks scattered pixels along the image's edges, and blanking those hurts any model.
  ``margin`` is the worst of (CAM - centre), (CAM - 1.25 x random square) and (CAM - 1.25 x random-weights
  map): positive passes all three;
- the sanity check (Adebayo et al., 2018): rank correlation between the map and the map of the same
  architecture with random weights, on the first ``--sanity-images`` of those images; at or above 0.5 the
  map shows the image's edges more than the model;
- milliseconds per image on this machine, one image at a time as the app explains them, on channels_last
  weights (``serve.store.for_serving``; outputs agree to 1e-6) (time it on an idle machine: a busy one can
  double it). The app computes the chosen map twice per ``/explain`` (the model's and
  its random-weights twin's) on one thread: check ``python bench/http_latency.py`` against its 150 ms too.

The recommendation is the best margin among the settings that pass the sanity check and the time limit,
unless plain Grad-CAM at the default layer is within one standard error of it (the difference of their
per-image CAM drops, paired: both blank the same images against the same baselines). Then Grad-CAM wins:
the simplest setting, and a lead that small does not carry over to other images. The choice and its
figures are written into the checkpoint's config.json as ``"cam"`` (``explain.recommended_cam``
reads it); ``tools.finish_checkpoint`` runs the same selection (``select``).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from architectures import CheckpointError, load_pretrained
from architectures.checkpoint import CONFIG_NAME
from serve.store import for_serving
from train.augment import normalize
from train.data import DataError, ImageSet, checkpoint_split, load_images

from explain.cam import LAYER_FREE, METHODS, cam_batch
from explain.faithfulness import deletion_drops, randomised_twin
from tools._config import update_config

SANITY_MAX_SPEARMAN = 0.5  # as tests/test_explain.py
DELETION_FRACTION = 0.25
DELETION_MIN_RATIO = 1.25
CHUNK = 50                 # images per cam_batch call in the deletion check, as the test


@dataclass
class Setting:
    method: str
    layer: str
    cam: float = 0.0
    centre: float = 0.0
    random: float = 0.0
    random_weights: float = 0.0  # drop when the random-weights model's map is blanked instead
    spearman: float = 0.0
    ms_per_image: float = 0.0
    cam_drops: np.ndarray = field(default=None, repr=False)  # per image, for the paired comparison

    @property
    def margin(self) -> float:
        return min(self.cam - self.centre, self.cam - DELETION_MIN_RATIO * self.random,
                   self.cam - DELETION_MIN_RATIO * self.random_weights)

    def row(self) -> str:
        return (f"{self.method:20s} {self.layer:16s} {self.cam:6.3f} {self.centre:6.3f} {self.random:6.3f} "
                f"{self.random_weights:7.3f} {self.cam / max(self.random, 1e-9):5.2f} {self.margin:+7.3f} "
                f"{self.spearman:8.3f} {self.ms_per_image:7.1f}")


def map_spearman(maps: np.ndarray, other_maps: np.ndarray) -> float:
    """Mean rank correlation of paired maps; a constant map (no positive evidence anywhere) counts as 0."""
    rhos = [spearmanr(a.ravel(), b.ravel()).statistic if np.ptp(a) > 0 and np.ptp(b) > 0 else 0.0
            for a, b in zip(maps, other_maps)]
    return float(np.mean(rhos))


def validation_order(val_idx: torch.Tensor) -> torch.Tensor:
    """The validation split's indices (``train.data.checkpoint_split``) in one seeded shuffle:
    tests/test_explain.py checks its first images and this tool chooses on the ones after them, so the two
    never share an image."""
    return val_idx[torch.randperm(len(val_idx), generator=torch.Generator().manual_seed(0))]


def selection_images(checkpoint_config: dict, image_set: ImageSet, skip: int, count: int) -> torch.Tensor:
    """Validation images ``skip`` to ``skip + count`` of ``validation_order``."""
    order = validation_order(checkpoint_split(checkpoint_config, image_set)[1])
    if skip + count > len(order):
        raise ValueError(f"the validation split has {len(order)} images; --skip {skip} + --images {count} is more")
    return image_set.images[order[skip:skip + count]]


def deletion_figures(model, random_model, x: torch.Tensor, method: str, layer: str | None) -> dict[str, np.ndarray]:
    """Per-image probability drops of the deletion check over ``x``: ``cam_drop``, ``centre_drop``,
    ``random_square_drop``, and ``random_weights_drop`` (``model``'s drop when the top pixels of
    ``random_model``'s map for the same class are blanked); and ``random_weights_map``, those maps (N x H x W),
    which the sanity check reuses. In chunks of CHUNK images, each chunk's random squares seeded by its offset."""
    drops = {"cam_drop": [], "centre_drop": [], "random_square_drop": [], "random_weights_drop": [],
             "random_weights_map": []}
    for start in range(0, len(x), CHUNK):
        chunk = x[start:start + CHUNK]
        maps, probs = cam_batch(model, chunk, method=method, layer=layer)
        targets = probs.argmax(1)
        random_maps, _ = cam_batch(random_model, chunk, targets=targets, method=method, layer=layer)
        result = deletion_drops(model, chunk, maps, targets, fraction=DELETION_FRACTION, seed=start,
                                random_weights_heatmaps=random_maps)
        result["random_weights_map"] = random_maps
        for key in drops:
            drops[key].append(result[key])
    return {key: np.concatenate(parts) for key, parts in drops.items()}


def measure(model, random_model, x: torch.Tensor, method: str, layer: str, sanity_images: int) -> Setting:
    setting = Setting(method, layer)
    drops = deletion_figures(model, random_model, x, method, layer)
    setting.cam_drops = drops["cam_drop"]
    setting.cam, setting.centre, setting.random, setting.random_weights = (
        float(drops[key].mean()) for key in ("cam_drop", "centre_drop", "random_square_drop", "random_weights_drop"))
    # One image at a time, as the app explains them: the timing, and the maps the sanity check compares with
    # the random-weights maps of the same images and classes (in eval mode a map does not depend on its batch).
    few = x[:sanity_images]
    started = time.perf_counter()
    maps = [cam_batch(model, image[None], method=method, layer=layer)[0] for image in few]
    setting.ms_per_image = 1000 * (time.perf_counter() - started) / len(few)
    setting.spearman = map_spearman(np.concatenate(maps), drops["random_weights_map"][:len(few)])
    return setting


def choose(eligible: list[Setting], default_layer: str) -> Setting:
    """The best margin of ``eligible`` (sorted best first), or plain Grad-CAM at the default layer where its
    CAM drops trail the best's by no more than one standard error of their paired difference."""
    best = eligible[0]
    plain = next((s for s in eligible if (s.method, s.layer) == ("gradcam", default_layer)), None)
    if plain is None or plain is best:
        return best
    lead = best.cam_drops - plain.cam_drops
    standard_error = float(lead.std(ddof=1) / np.sqrt(len(lead))) if len(lead) > 1 else 0.0
    if float(lead.mean()) <= standard_error:
        print(f"gradcam at {default_layer} trails the best ({best.method} at {best.layer}) by {lead.mean():.3f}, "
              f"within one standard error ({standard_error:.3f}): the simpler setting is kept")
        return plain
    return best


def select(model, images_uint8: torch.Tensor, methods=METHODS, sanity_images: int = 20, max_ms: float = 30.0,
           progress: bool = True) -> tuple[list[Setting], Setting | None]:
    """Measure every method of ``methods`` at every CAM layer of ``model`` (its ``config`` gives mean and std) on
    ``images_uint8``; returns the settings, best margin first, and the recommended one: the best among those
    that pass the sanity check within ``max_ms`` per image (``choose``), or None where none does."""
    config = model.config
    x = normalize(images_uint8, torch.tensor(config["mean"]), torch.tensor(config["std"]))
    random_model = randomised_twin(model)
    # A layer-free method (occlusion) is one setting, listed at the default layer it ignores.
    grid = [(method, layer) for method in methods
            for layer in ([model.default_cam_layer] if method in LAYER_FREE else model.cam_layers)]
    with torch.enable_grad():
        settings = [measure(model, random_model, x, method, layer, min(sanity_images, len(x)))
                    for method, layer in tqdm(grid, desc=config["arch"], unit="setting", disable=not progress)]
    settings.sort(key=lambda s: s.margin, reverse=True)
    eligible = [s for s in settings if s.spearman < SANITY_MAX_SPEARMAN and s.ms_per_image <= max_ms]
    return settings, (choose(eligible, model.default_cam_layer) if eligible else None)


def print_table(settings: list[Setting]) -> None:
    print(f"{'method':20s} {'layer':16s} {'CAM':>6s} {'centre':>6s} {'random':>6s} {'r.wts':>7s} {'ratio':>5s} "
          f"{'margin':>7s} {'spearman':>8s} {'ms/img':>7s}")
    for setting in settings:
        print(setting.row())


def cam_entry(best: Setting, images: int, chosen_by: str) -> dict:
    """The ``cam`` field of a checkpoint's config.json: the chosen setting (layer None for a layer-free
    method) and its figures on the selection images."""
    return {"method": best.method, "layer": None if best.method in LAYER_FREE else best.layer,
            "chosen_by": chosen_by, "images": images, "margin": round(best.margin, 4),
            "cam_drop": round(best.cam, 4), "centre_drop": round(best.centre, 4),
            "random_square_drop": round(best.random, 4), "random_weights_drop": round(best.random_weights, 4),
            "spearman": round(best.spearman, 4), "ms_per_image": round(best.ms_per_image, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.choose_cam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument("--cache-dir", default="data/cache", help="decoded-image cache of train.data")
    parser.add_argument("--images", type=int, default=200, help="validation images for the deletion check")
    parser.add_argument("--skip", type=int, default=100, help="images of the shuffle left to the tests")
    parser.add_argument("--sanity-images", type=int, default=20, help="images for the sanity check and timing")
    parser.add_argument("--max-ms", type=float, default=30.0, help="time limit per image (issue 3: 30 ms)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to try")
    args = parser.parse_args(argv)
    methods = parse_methods(parser, args.methods)
    if args.images < 1 or args.sanity_images < 1 or args.skip < 0:
        parser.error("--images and --sanity-images must be positive, --skip not negative")
    try:
        if not (Path(args.checkpoint) / CONFIG_NAME).is_file():
            raise CheckpointError(f"{args.checkpoint} is not a local checkpoint folder: the choice is written "
                                  f"into its {CONFIG_NAME}")
        model = for_serving(load_pretrained(args.checkpoint))  # timed in the layout the app serves
        config = model.config
        image_set = load_images(args.data, config["image_size"], cache_dir=args.cache_dir, progress=False)
        images = selection_images(config, image_set, args.skip, args.images)
    except (CheckpointError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings, best = select(model, images, methods, args.sanity_images, args.max_ms)
    print(f"{config['arch']}: {len(images)} validation images (after the first {args.skip} of the tests' shuffle)")
    print_table(settings)
    if best is None:
        print("no setting passes the sanity check within the time limit", file=sys.stderr)
        return 1
    verdict = "passes" if best.margin > 0 else "fails"
    print(f"recommended: ({best.method!r}, {best.layer!r}): margin {best.margin:+.3f} ({verdict} the deletion check "
          f"on these images), Spearman {best.spearman:.3f}, {best.ms_per_image:.1f} ms per image")
    chosen_by = shlex.join(["python", "-m", "tools.choose_cam", *(sys.argv[1:] if argv is None else argv)])
    path = update_config(args.checkpoint, {"cam": cam_entry(best, len(images), chosen_by)})
    print(f"wrote its \"cam\" into {path}")
    return 0


def parse_methods(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """Comma-separated METHODS, or a usage error naming the unknown ones."""
    methods = [m.strip() for m in text.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    return methods


if __name__ == "__main__":
    sys.exit(main())
