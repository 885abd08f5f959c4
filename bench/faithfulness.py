"""How often each architecture's map passes the app's own verdict, on validation images.

    python bench/faithfulness.py --data ../shared/data/cifar10-jpeg/train.tar.gz            # recommended maps
    python bench/faithfulness.py --data ... --method gradcam --archs resnet,vgg --images 40
    python bench/faithfulness.py --data ... --method gradcam++-fused --layer blocks.5 --archs resnet

For each architecture: the share of images whose map is faithful (``explain.verdict``: it beats random maps
as smooth by 1.25x and the random-weights map), the share that also beats the centre prior, and the four
outcomes, on the first ``--images`` images of the validation order that tests/test_explain.py checks (the
recommended setting was chosen on later ones: ``tools.choose_cam --skip``), with the milliseconds per image
for the map and its random-weights twin. A markdown table on stdout; ``--out`` also writes it as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import explain  # noqa: E402
from architectures import list_models, load_pretrained  # noqa: E402
from explain.verdict import outcome_shares  # noqa: E402
from serve.store import for_serving  # noqa: E402
from tools.choose_cam import deletion_figures, selection_images  # noqa: E402
from train.augment import normalize  # noqa: E402
from train.data import load_images  # noqa: E402


def measure(arch: str, image_set, images: int, method: str | None, checkpoints: Path, layer: str | None = None) -> dict:
    model = for_serving(load_pretrained(checkpoints / arch))
    config = model.config
    chosen, layer = explain.recommended_cam(config) if method in (None, "recommended") else (method, layer)
    x = normalize(selection_images(config, image_set, 0, images), torch.tensor(config["mean"]), torch.tensor(config["std"]))
    started = time.perf_counter()
    with torch.enable_grad():
        verdicts = deletion_figures(model, explain.randomised_twin(model), x, chosen, layer)["verdicts"]
    seconds = time.perf_counter() - started
    return {"arch": arch, "method": chosen, "layer": layer, "images": images, **outcome_shares(verdicts),
            "seconds": round(seconds, 1)}


def table(rows: list[dict]) -> str:
    lines = ["| architecture | method | faithful | also beats the centre | faithful, centre | does not explain "
             "| inconclusive |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        where = row["method"] + (f" at `{row['layer']}`" if row["layer"] else "")
        lines.append(f"| {row['arch']} | {where} | {row['faithful']:.0%} | {row['explains']:.0%} | {row['centre']:.0%} "
                     f"| {row['not explained']:.0%} | {row['inconclusive']:.0%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the training data of the checkpoints (their split is carved from it)")
    parser.add_argument("--cache-dir", default=str(ROOT / "data" / "cache"))
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    parser.add_argument("--archs", default=",".join(list_models()))
    parser.add_argument("--method", default="recommended", help="'recommended' (each config's cam) or one method")
    parser.add_argument("--layer", help="with --method: the layer it reads (default: the deepest)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the app serves: one thread per request
    image_set = load_images(args.data, 32, args.cache_dir, progress=False)
    rows = []
    for arch in args.archs.split(","):
        rows.append(measure(arch, image_set, args.images, args.method, Path(args.checkpoints), args.layer))
        print(f"{arch}: faithful {rows[-1]['faithful']:.0%}, explains {rows[-1]['explains']:.0%}", file=sys.stderr)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
