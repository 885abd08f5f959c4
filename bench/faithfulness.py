"""How often the app's verdict passes each architecture's maps, and how often it passes maps that know nothing
about the model (its false-pass rate), on validation images.

    python bench/faithfulness.py --data ../shared/data/cifar10-jpeg/train.tar.gz            # the default maps
    python bench/faithfulness.py --data ... --archs resnet,vgg --images 40 --out figures.json
    python bench/faithfulness.py --data ... --method gradcam --archs resnet              # another method

Per architecture, on validation images ``--skip`` to ``--skip + --images`` of the seeded order that
tests/test_explain.py also reads (the verdict's thresholds were set on later ones; nothing is chosen on these):

- **true pass rate**: the share of images whose map (each checkpoint's recommended method, as the app shows it)
  is faithful (``explain.verdict``: it beats random maps as smooth and the random-weights map), and the share that
  also beats the centre prior;
- **false-pass rate** of three controls that carry no information about the model, judged exactly like the map
  (the same random-weights reference): random smooth maps (blurred white noise of mixed smoothness); random smooth
  maps put through the app's per-image choice (a phase-randomised copy of each of the ten candidates, the best
  taken by ``explain.choose`` on the trained model); and the same method's map from another random network (seed
  1, not the verdict's twin). A verdict with a known false-pass rate is a test; one without is a colour;
- **held-out insertion**: the share of images on which the map's insertion curve (its hottest 5-50% pasted into a
  blurred copy) beats the centre disc's and plain Grad-CAM's.

A markdown table on stdout; ``--out`` also writes every image's curves as JSON (``--rejudge FILE`` re-reads such a
file and applies today's thresholds, to see a threshold's effect without recomputing).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import explain  # noqa: E402  (after the path: run as a script)
from architectures import list_models, load_pretrained  # noqa: E402
from explain.choice import CHOSEN_FROM, candidates, choose  # noqa: E402
from explain.curves import CHOICE_FRACTIONS, centre_prior, phase_randomised, verdict_curves  # noqa: E402
from explain.layer_cam import blur  # noqa: E402
from explain.verdict import map_verdict  # noqa: E402
from preprocess import normalize  # noqa: E402
from serve.store import for_serving  # noqa: E402
from tools.choose_cam import selection_images  # noqa: E402
from train.data import load_images  # noqa: E402

CHUNK = 24
CONTROLS = ("random_smooth", "random_chosen", "other_random_network")
CURVE_KEYS = ("map", "centre", "random", "random_weights")
CONTROL_SIGMAS = (1.0, 2.0, 3.0, 4.0)  # blurred-noise controls: from speckle to blobs as big as an object


def random_smooth_maps(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """``count`` maps of blurred white noise, each at one of ``CONTROL_SIGMAS`` in turn: random smooth maps of
    mixed smoothness, unrelated to any image or model. Seeded."""
    noise = torch.randn(count, height, width, generator=torch.Generator().manual_seed(seed)).numpy()
    return explain.unit_range(np.stack([blur(noise[i:i + 1], CONTROL_SIGMAS[i % len(CONTROL_SIGMAS)])[0]
                                        for i in range(count)]))


def method_maps(model, x, targets, method: str, layer: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The maps of ``method`` and, for the "chosen" method, the candidates it chose among (else None)."""
    if method != "chosen":
        return explain.cam_batch(model, x, targets, method, layer)[0], None
    with explain.model_lock(model):
        pool = candidates(model, x, list(targets))
        best = choose(model, x, pool, targets)
    return pool[np.arange(len(x)), best], pool


def measure_chunk(model, twin, other, x, method: str, layer: str | None, seed: int) -> list[dict]:
    """Every image's curves for the map and the three controls, and its held-out insertion comparison."""
    with torch.inference_mode():
        targets = model(x).argmax(1).tolist()
    maps, pool = method_maps(model, x, targets, method, layer)
    twin_maps, _ = method_maps(twin, x, targets, method, layer)
    other_maps, _ = method_maps(other, x, targets, method, layer)
    height, width = x.shape[-2:]
    smooth = random_smooth_maps(len(x), height, width, seed)
    if pool is not None:  # one phase-randomised copy of each candidate, chosen among as the app chooses
        surrogates = phase_randomised(torch.as_tensor(pool).flatten(0, 1), 1, seed + 1)[:, 0]
        surrogates = explain.unit_range(surrogates.numpy()).reshape(pool.shape)
        chosen_random = surrogates[np.arange(len(x)), choose(model, x, surrogates, targets)]
    else:
        chosen_random = None
    judged = {"map": maps, "random_smooth": smooth, "random_chosen": chosen_random, "other_random_network": other_maps}
    records = [{"target": t} for t in targets]
    for name, judged_maps in judged.items():
        if judged_maps is None:
            continue
        curves = explain.evidence(model, x, judged_maps, targets, twin_maps, seed=seed)
        for i, record in enumerate(records):
            record[name] = {key: np.asarray(curves[key][i]).round(5).tolist() for key in CURVE_KEYS}
    gradcam = pool[:, CHOSEN_FROM.index("gradcam")] if pool is not None else explain.cam_batch(model, x, targets)[0]
    orderings = torch.stack([torch.as_tensor(maps), centre_prior(height, width).expand(len(x), height, width),
                             torch.as_tensor(gradcam)], 1)
    insertion = verdict_curves(model, x, orderings, targets, CHOICE_FRACTIONS)["insertion"].mean(2)  # B x 3
    for i, record in enumerate(records):
        record["insertion"] = {"map": float(insertion[i, 0]), "centre": float(insertion[i, 1]),
                               "gradcam": float(insertion[i, 2])}
    return records


def measure(arch: str, image_set, skip: int, images: int, method: str | None, checkpoints: Path,
            layer: str | None = None) -> dict:
    model = for_serving(load_pretrained(checkpoints / arch))
    config = model.config
    method, layer = explain.recommended_cam(config) if method in (None, "recommended") else (method, layer)
    x = normalize(selection_images(config, image_set, skip, images), torch.tensor(config["mean"]),
                  torch.tensor(config["std"]))
    twin = for_serving(explain.randomised_twin(model))
    other = for_serving(explain.randomised_twin(model, seed=1))
    started, records = time.perf_counter(), []
    for start in tqdm(range(0, len(x), CHUNK), desc=arch, leave=False):
        records += measure_chunk(model, twin, other, x[start:start + CHUNK], method, layer, seed=skip + start)
    return {"arch": arch, "method": method, "layer": layer, "skip": skip, "images": images,
            "seconds": round(time.perf_counter() - started, 1), "records": records}


def summarise(row: dict) -> dict:
    """Shares over a row's images, judged by today's ``map_verdict``."""
    records = row["records"]
    verdicts = [map_verdict(r["map"]) for r in records]
    summary = {"arch": row["arch"], "method": row["method"], "layer": row["layer"], "images": len(records),
               "faithful": np.mean([v.faithful for v in verdicts]),
               "explains": np.mean([v.beats_centre for v in verdicts])}
    for control in CONTROLS:
        judged = [map_verdict(r[control]) for r in records if control in r]
        summary[control] = np.mean([v.faithful for v in judged]) if judged else None
    summary["insertion_beats_centre"] = np.mean([r["insertion"]["map"] > r["insertion"]["centre"] for r in records])
    summary["insertion_beats_gradcam"] = np.mean([r["insertion"]["map"] > r["insertion"]["gradcam"] for r in records])
    return summary


def _share(value) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def table(summaries: list[dict]) -> str:
    lines = ["| architecture | method | faithful | also beats the centre | false pass: random smooth | "
             "random smooth, chosen | other random network | insertion beats centre | beats Grad-CAM |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        where = s["method"] + (f" at `{s['layer']}`" if s["layer"] else "")
        lines.append(f"| {s['arch']} | {where} | {s['faithful']:.0%} | {s['explains']:.0%} | "
                     + " | ".join(_share(s[c]) for c in CONTROLS)
                     + f" | {s['insertion_beats_centre']:.0%} | {s['insertion_beats_gradcam']:.0%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="the training data of the checkpoints (their split is carved from it)")
    parser.add_argument("--cache-dir", default=str(ROOT / "data" / "cache"))
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    parser.add_argument("--archs", default=",".join(list_models()))
    parser.add_argument("--method", default="recommended", help="'recommended' (each config's cam) or one method")
    parser.add_argument("--layer", help="with --method: the layer it reads (default: the deepest)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--skip", type=int, default=0, help="start this far into the validation order")
    parser.add_argument("--out", help="also write every image's curves here (JSON)")
    parser.add_argument("--rejudge", help="summarise a file written by --out with today's verdict; measure nothing")
    args = parser.parse_args(argv)
    if args.rejudge:
        rows = json.loads(Path(args.rejudge).read_text())
    else:
        if not args.data:
            parser.error("--data is required unless --rejudge is given")
        torch.set_num_threads(1)  # as the app serves: one thread per request
        image_set = load_images(args.data, 32, args.cache_dir, progress=False)
        rows = []
        for arch in args.archs.split(","):
            rows.append(measure(arch, image_set, args.skip, args.images, args.method, Path(args.checkpoints),
                                args.layer))
            if args.out:  # after each architecture, so a stopped run keeps what it measured
                Path(args.out).write_text(json.dumps(rows))
            s = summarise(rows[-1])
            print(f"{arch}: faithful {s['faithful']:.0%}, explains {s['explains']:.0%}, false pass "
                  + ", ".join(f"{c} {_share(s[c])}" for c in CONTROLS), file=sys.stderr)
    print(table([summarise(row) for row in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
