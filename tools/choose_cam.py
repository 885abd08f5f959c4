"""Choose the explanation setting that explains a checkpoint most faithfully: every method at every CAM layer
(the methods that work on the input, which take no layer, once).

    python -m tools.choose_cam --checkpoint checkpoints/efficientnet --data ../shared/data/cifar10-jpeg/train.tar.gz

Run it again whenever a checkpoint is retrained: which method and depth explain a model best changes with
its weights. Each setting gets, on ``--images`` validation images that the tests do not use (the ones after
tests/test_explain.py's first ``--skip`` of the same seeded shuffle):

- the verdict of ``explain.verdict.map_verdict`` on every image, the one the app shows: the held-out curves
  (blurred-infill deletion and insertion) of the map against random maps as smooth as it, the centre prior
  and the same method's map from random weights (``faithfulness.randomised_twin``; that baseline catches maps
  whose drop comes from their shape alone). ``faithful`` is the share of images the map explains or explains as
  well as the centre does;
- the sanity check (Adebayo et al., 2018): rank correlation between the map and the map of the same
  architecture with random weights, on the first ``--sanity-images`` of those images; at or above 0.5 the
  map shows the image's edges more than the model;
- milliseconds per image for the map and its random-weights twin, as ``/explain`` computes them, one image
  at a time on channels_last weights (``serve.store.for_serving``). Settings over ``--max-ms`` are listed but
  not measured further (time it on an idle machine: a busy one can double it).

The recommendation is the highest faithful share (then the highest share that also beats the centre) among
the settings that pass the sanity check within the time limit, unless plain Grad-CAM at the default layer is
within one standard error of it (paired per-image difference): then Grad-CAM wins, the simplest setting. The
choice and its figures are written into the checkpoint's config.json as ``"cam"`` (``explain.recommended_cam``
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
from explain.cam import LAYER_FREE, METHODS, cam_batch
from explain.faithfulness import evidence, randomised_twin
from explain.verdict import VERSION as VERDICT_VERSION
from explain.verdict import Outcome, batch_verdicts, outcome_shares
from serve.store import for_serving
from tools._config import update_config
from train.augment import normalize
from train.data import DataError, ImageSet, checkpoint_split, load_images

SANITY_MAX_SPEARMAN = 0.5  # as tests/test_explain.py
CHUNK = 50                 # images per cam_batch call
DEFAULT_MAX_MS = 300.0     # map + its random-weights twin, per image: /explain's budget for the slowest model


@dataclass
class Setting:
    method: str
    layer: str
    shares: dict = field(default_factory=dict)   # outcome -> share of images, and "faithful"
    scores: dict = field(default_factory=dict)   # mean curve score of the map and each reference
    spearman: float = 0.0
    ms_per_image: float = 0.0
    faithful_flags: np.ndarray = field(default=None, repr=False)  # per image, for the paired comparison

    @property
    def measured(self) -> bool:
        return bool(self.shares)

    @property
    def rank(self) -> tuple:
        return (self.shares.get("faithful", -1.0), self.shares.get(Outcome.EXPLAINS.value, -1.0))

    def row(self) -> str:
        if not self.measured:
            unmeasured = "(over the time limit: not measured)"
            return f"{self.method:20s} {self.layer:16s} {unmeasured:>44s} {self.ms_per_image:7.1f}"
        sh, sc = self.shares, self.scores
        return (f"{self.method:20s} {self.layer:16s} {sh['faithful']:6.0%} {sh[Outcome.EXPLAINS.value]:6.0%} "
                f"{sh[Outcome.CENTRE.value]:6.0%} {sh[Outcome.NOT_EXPLAINED.value]:6.0%} "
                f"{sh[Outcome.INCONCLUSIVE.value]:5.0%} {sc['map']:6.3f} {sc['centre']:6.3f} {sc['random']:6.3f} "
                f"{sc['random_weights']:6.3f} {self.spearman:8.3f} {self.ms_per_image:7.1f}")


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


def deletion_figures(model, random_model, x: torch.Tensor, method: str, layer: str | None) -> dict:
    """Over ``x``: the verdicts (``explain.verdict.batch_verdicts``) of each image's map of its predicted class,
    with the map of ``random_model`` for the same class as the random-weights reference; and
    ``random_weights_map``, those maps (N x H x W), which the sanity check reuses. In chunks of CHUNK images,
    each chunk's random maps seeded by its offset."""
    verdicts, random_weights_maps = [], []
    for start in range(0, len(x), CHUNK):
        chunk = x[start:start + CHUNK]
        maps, probs = cam_batch(model, chunk, method=method, layer=layer)
        targets = probs.argmax(1)
        random_maps, _ = cam_batch(random_model, chunk, targets=targets, method=method, layer=layer)
        curves = evidence(model, chunk, maps, targets, random_weights_heatmaps=random_maps, seed=start)
        verdicts += batch_verdicts(curves)
        random_weights_maps.append(random_maps)
    return {"verdicts": verdicts, "random_weights_map": np.concatenate(random_weights_maps)}


def time_per_image(model, random_model, few: torch.Tensor, method: str, layer: str) -> tuple[float, np.ndarray]:
    """Milliseconds per image for the map and its random-weights twin, one image at a time as /explain computes
    them; and the maps (N x H x W) of ``few``."""
    started, maps = time.perf_counter(), []
    for image in few:
        map_, probs = cam_batch(model, image[None], method=method, layer=layer)
        cam_batch(random_model, image[None], targets=probs.argmax(1), method=method, layer=layer)
        maps.append(map_)
    return 1000 * (time.perf_counter() - started) / len(few), np.concatenate(maps)


def measure(model, random_model, x: torch.Tensor, method: str, layer: str, sanity_images: int,
            max_ms: float = float("inf")) -> Setting:
    setting = Setting(method, layer)
    few = x[:sanity_images]
    setting.ms_per_image, maps = time_per_image(model, random_model, few, method, layer)
    if setting.ms_per_image > max_ms:
        return setting
    figures = deletion_figures(model, random_model, x, method, layer)
    verdicts = figures["verdicts"]
    setting.shares = outcome_shares(verdicts)
    setting.scores = {key: float(np.mean([v.scores[key] for v in verdicts]))
                      for key in ("map", "centre", "random", "random_weights")}
    setting.faithful_flags = np.array([v.faithful for v in verdicts], dtype=np.float64)
    setting.spearman = map_spearman(maps, figures["random_weights_map"][:len(few)])
    return setting


def choose(eligible: list[Setting], default_layer: str) -> Setting:
    """The best of ``eligible`` (sorted best first), or plain Grad-CAM at the default layer where its faithful
    share trails the best's by no more than one standard error of their paired per-image difference."""
    best = eligible[0]
    plain = next((s for s in eligible if (s.method, s.layer) == ("gradcam", default_layer)), None)
    if plain is None or plain is best:
        return best
    lead = best.faithful_flags - plain.faithful_flags
    standard_error = float(lead.std(ddof=1) / np.sqrt(len(lead))) if len(lead) > 1 else 0.0
    if float(lead.mean()) <= standard_error:
        print(f"gradcam at {default_layer} trails the best ({best.method} at {best.layer}) by {lead.mean():.1%} "
              f"of images, within one standard error ({standard_error:.1%}): the simpler setting is kept")
        return plain
    return best


def select(model, images_uint8: torch.Tensor, methods=METHODS, sanity_images: int = 20,
           max_ms: float = DEFAULT_MAX_MS, progress: bool = True, deepest_only: bool = False
           ) -> tuple[list[Setting], Setting | None]:
    """Measure every method of ``methods`` at every CAM layer of ``model`` (only the default, deepest one with
    ``deepest_only``; its ``config`` gives mean and std) on ``images_uint8``; returns the settings, best first,
    and the recommended one: the best among those that pass the sanity check within ``max_ms`` per image
    (``choose``), or None where none does."""
    config = model.config
    x = normalize(images_uint8, torch.tensor(config["mean"]), torch.tensor(config["std"]))
    random_model = randomised_twin(model)
    # A layer-free method is one setting, listed at the default layer it ignores.
    grid = [(method, layer) for method in methods
            for layer in ([model.default_cam_layer] if method in LAYER_FREE or deepest_only else model.cam_layers)]
    with torch.enable_grad():
        settings = [measure(model, random_model, x, method, layer, min(sanity_images, len(x)), max_ms)
                    for method, layer in tqdm(grid, desc=config["arch"], unit="setting", disable=not progress)]
    settings.sort(key=lambda s: s.rank, reverse=True)
    eligible = [s for s in settings if s.measured and s.spearman < SANITY_MAX_SPEARMAN]
    return settings, (choose(eligible, model.default_cam_layer) if eligible else None)


def print_table(settings: list[Setting]) -> None:
    print(f"{'method':20s} {'layer':16s} {'faith.':>6s} {'expl.':>6s} {'centre':>6s} {'no':>6s} {'inc.':>5s} "
          f"{'map':>6s} {'centre':>6s} {'random':>6s} {'r.wts':>6s} {'spearman':>8s} {'ms/img':>7s}")
    for setting in settings:
        print(setting.row())


def cam_entry(best: Setting, images: int, chosen_by: str) -> dict:
    """The ``cam`` field of a checkpoint's config.json: the chosen setting (layer None for a layer-free
    method) and its figures on the selection images."""
    return {"method": best.method, "layer": None if best.method in LAYER_FREE else best.layer,
            "chosen_by": chosen_by, "images": images, "verdict": VERDICT_VERSION,
            "outcomes": {key: round(value, 4) for key, value in best.shares.items()},
            "scores": {key: round(value, 4) for key, value in best.scores.items()},
            "spearman": round(best.spearman, 4), "ms_per_image": round(best.ms_per_image, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.choose_cam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="the dataset the checkpoint was trained on")
    parser.add_argument("--cache-dir", default="data/cache", help="decoded-image cache of train.data")
    parser.add_argument("--images", type=int, default=200, help="validation images for the verdict")
    parser.add_argument("--skip", type=int, default=100, help="images of the shuffle left to the tests")
    parser.add_argument("--sanity-images", type=int, default=20, help="images for the sanity check and timing")
    parser.add_argument("--max-ms", type=float, default=DEFAULT_MAX_MS,
                        help="time limit per image for the map and its random-weights twin")
    parser.add_argument("--deepest-only", action="store_true", help="try each layer method at its default layer only")
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
    settings, best = select(model, images, methods, args.sanity_images, args.max_ms,
                            deepest_only=args.deepest_only)
    print(f"{config['arch']}: {len(images)} validation images (after the first {args.skip} of the tests' shuffle)")
    print_table(settings)
    if best is None:
        print("no setting passes the sanity check within the time limit", file=sys.stderr)
        return 1
    print(f"recommended: ({best.method!r}, {best.layer!r}): faithful on {best.shares['faithful']:.0%} of these images, "
          f"beats the centre too on {best.shares[Outcome.EXPLAINS.value]:.0%}, Spearman {best.spearman:.3f}, "
          f"{best.ms_per_image:.1f} ms per image with its twin")
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
