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
  shallow layer's map picks scattered pixels along the image's edges, and blanking those hurts any model,
  as LayerCAM at the widened ResNet's first stage showed (a 0.511 drop, 2.8 times the centre square's,
  against 0.497 for its random-weights map).
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
the simplest setting, and a lead that small is noise (a setting chosen on a 0.01 lead over 200 images lost
to the centre square on the tests' 100). Copy it into ``explain.cam._RECOMMENDED`` (and its figures into
tests/test_explain.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from architectures import CheckpointError, load_pretrained
from serve.store import for_serving
from train.augment import normalize
from train.data import DataError, load_images, split_train_val

from explain.cam import LAYER_FREE, METHODS, cam_batch
from explain.faithfulness import deletion_drops, randomised_twin

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


def validation_order(labels: torch.Tensor, val_fraction: float = 0.1, split_seed: int = 0) -> torch.Tensor:
    """The validation split's indices in one seeded shuffle: tests/test_explain.py checks its first images and
    this tool chooses on the ones after them, so the two never share an image."""
    _, val_idx = split_train_val(labels, val_fraction, split_seed)
    return val_idx[torch.randperm(len(val_idx), generator=torch.Generator().manual_seed(0))]


def selection_images(checkpoint_config: dict, data: str, cache_dir: str, skip: int, count: int) -> torch.Tensor:
    """Validation images ``skip`` to ``skip + count`` of ``validation_order``."""
    image_set = load_images(data, checkpoint_config["image_size"], cache_dir=cache_dir, progress=False)
    if image_set.class_names != checkpoint_config["class_names"]:
        raise ValueError(f"the data's classes {image_set.class_names} differ from the checkpoint's")
    recipe = checkpoint_config.get("recipe", {})
    order = validation_order(image_set.labels, recipe.get("val_fraction", 0.1), recipe.get("split_seed", 0))
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
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or args.images < 1 or args.sanity_images < 1 or args.skip < 0:
        parser.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}" if unknown
                     else "--images and --sanity-images must be positive, --skip not negative")
    try:
        model = for_serving(load_pretrained(args.checkpoint))  # timed in the layout the app serves
        config = model.config
        images = selection_images(config, args.data, args.cache_dir, args.skip, args.images)
    except (CheckpointError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    x = normalize(images, torch.tensor(config["mean"]), torch.tensor(config["std"]))
    random_model = randomised_twin(model)
    torch.set_grad_enabled(True)
    # A layer-free method (occlusion) is one setting, listed at the default layer it ignores.
    grid = [(method, layer) for method in methods
            for layer in ([model.default_cam_layer] if method in LAYER_FREE else model.cam_layers)]
    settings = [measure(model, random_model, x, method, layer, min(args.sanity_images, len(x)))
                for method, layer in tqdm(grid, desc=config["arch"], unit="setting")]
    settings.sort(key=lambda s: s.margin, reverse=True)
    print(f"{config['arch']}: {len(x)} validation images (after the first {args.skip} of the tests' shuffle)")
    print(f"{'method':20s} {'layer':16s} {'CAM':>6s} {'centre':>6s} {'random':>6s} {'r.wts':>7s} {'ratio':>5s} "
          f"{'margin':>7s} {'spearman':>8s} {'ms/img':>7s}")
    for setting in settings:
        print(setting.row())
    eligible = [s for s in settings if s.spearman < SANITY_MAX_SPEARMAN and s.ms_per_image <= args.max_ms]
    if not eligible:
        print("no setting passes the sanity check within the time limit", file=sys.stderr)
        return 1
    best = choose(eligible, model.default_cam_layer)
    verdict = "passes" if best.margin > 0 else "fails"
    print(f"recommended: ({best.method!r}, {best.layer!r}): margin {best.margin:+.3f} ({verdict} the deletion check "
          f"on these images), Spearman {best.spearman:.3f}, {best.ms_per_image:.1f} ms per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
