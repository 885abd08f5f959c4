"""Latency of attacking one upload, per architecture, beside the plain served prediction (issue 45, item 8).

    python bench/attack_latency.py [--rounds 2] [--epsilon 2] [--arch vgg --arch resnet] [--out FILE.json]

One image at a time, one CPU thread, in-process (no HTTP): the repository's eleven example photos (ten
validation images and the cat), each decoded once. Per architecture, the p50 over the images and rounds of
- predict: the upload's model view, normalised, and its served probabilities (six views), as /predict computes;
- FGSM and PGD-10 at ``--epsilon``: ``robustness.adversarial.attack_image`` on the served model, the whole
  of what an attacked /predict adds: the attack, the 8-bit rounding and the attacked file's probabilities
  (PGD stops when an image is fooled, so an image that falls early costs fewer steps);
- the smallest budget that flips the image (``smallest_epsilon``, PGD from 1/255 up), first round only.
Then Compare's attack: PGD-10 on the cat against all the architectures in turn, as one request would.
Targets: FGSM adds at most 100 ms to predict's p50; PGD-10 at most 1 s p50 for the median architecture;
Compare's attack at most 10 s. Prints a markdown table and writes the figures as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from architectures import list_models  # noqa: E402
from architectures.checkpoint import atomic_write_json  # noqa: E402
from preprocess import load_image, model_view, served_probs, to_tensor  # noqa: E402
from robustness.adversarial import attack_image, smallest_epsilon  # noqa: E402
from timing import percentiles  # noqa: E402  (bench/ is on sys.path when this file runs)
from tools.attack import served_classifier  # noqa: E402

CHECKPOINTS = ROOT / "checkpoints"
EXAMPLES = sorted((ROOT / "examples").glob("val_*.png")) + [ROOT / "examples" / "cat_chelsea.jpg"]
TARGETS_MS = {"fgsm_added": 100, "pgd_median_arch": 1000, "compare_pgd": 10_000}


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return 1000 * (time.perf_counter() - start), out


def measure(arch: str, uploads, rounds: int, epsilon: float) -> dict:
    clf = served_classifier(CHECKPOINTS / arch)
    config = clf.model.config

    def predict(image):
        x = to_tensor(image, config)
        with torch.inference_mode():
            return served_probs(clf.model, x, clf.temperature)

    def attacked(image, attack):
        return attack_image(clf, model_view(image, config), attack, epsilon)

    for image in uploads[:2]:  # warm-up: the first calls allocate
        predict(image)
        attacked(image, "pgd")
    times = {"predict": [], "fgsm": [], "pgd": [], "smallest_epsilon": []}
    fooled = {"fgsm": 0, "pgd": 0}
    for round_ in range(rounds):
        for image in uploads:
            times["predict"].append(timed(lambda: predict(image))[0])
            for attack in ("fgsm", "pgd"):
                ms, result = timed(lambda: attacked(image, attack))
                times[attack].append(ms)
                fooled[attack] += result.fooled
            if round_ == 0:
                times["smallest_epsilon"].append(timed(lambda: smallest_epsilon(clf, model_view(image, config)))[0])
    figures = {name: percentiles(values, 1) for name, values in times.items()}
    calls = rounds * len(uploads)
    return {**figures, "fgsm_fooled": f"{fooled['fgsm']}/{calls}", "pgd_fooled": f"{fooled['pgd']}/{calls}"}


def compare_attack(archs, upload, epsilon: float, repeats: int = 3) -> dict:
    """PGD-10 on one upload against every architecture in turn (the models loaded beforehand, as served)."""
    classifiers = [served_classifier(CHECKPOINTS / arch) for arch in archs]
    views = [model_view(upload, clf.model.config) for clf in classifiers]
    times = [timed(lambda: [attack_image(clf, view, "pgd", epsilon) for clf, view in zip(classifiers, views)])[0]
             for _ in range(repeats)]
    return percentiles(times, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the example images per architecture")
    parser.add_argument("--epsilon", type=float, default=2, help="the budget in 1/255")
    parser.add_argument("--arch", action="append", choices=list_models(), help="default: every architecture")
    parser.add_argument("--out", default=str(ROOT / "bench" / "attack_latency.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    archs = [a for a in (args.arch or list_models()) if (CHECKPOINTS / a / "config.json").is_file()]
    uploads = [load_image(path) for path in EXAMPLES]
    print(f"torch {torch.__version__}, 1 CPU thread, one image at a time, {len(uploads)} images x {args.rounds} "
          f"rounds, epsilon {args.epsilon:g}/255\n")
    print("| architecture | predict p50 (ms) | FGSM p50 (ms) | FGSM adds (ms) | PGD-10 p50 (ms) | PGD-10 fooled | "
          "smallest epsilon p50 (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for arch in archs:
        row = rows[arch] = measure(arch, uploads, args.rounds, args.epsilon)
        row["fgsm_added_ms"] = round(row["fgsm"]["p50_ms"] - row["predict"]["p50_ms"], 1)
        print(f"| {arch} | {row['predict']['p50_ms']:.0f} | {row['fgsm']['p50_ms']:.0f} | {row['fgsm_added_ms']:.0f} | "
              f"{row['pgd']['p50_ms']:.0f} | {row['pgd_fooled']} | {row['smallest_epsilon']['p50_ms']:.0f} |",
              flush=True)
    compare = compare_attack(archs, uploads[-1], args.epsilon)
    median_pgd = statistics.median(row["pgd"]["p50_ms"] for row in rows.values())
    worst_added = max(row["fgsm_added_ms"] for row in rows.values())
    print(f"\nPGD-10 p50 of the median architecture: {median_pgd:.0f} ms (target {TARGETS_MS['pgd_median_arch']}); "
          f"FGSM adds at most {worst_added:.0f} ms (target {TARGETS_MS['fgsm_added']}); Compare's PGD-10 on the cat "
          f"against all {len(archs)}: p50 {compare['p50_ms'] / 1000:.1f} s "
          f"(target {TARGETS_MS['compare_pgd'] / 1000:.0f} s)")
    command = shlex.join(["python", "bench/attack_latency.py", *(sys.argv[1:] if argv is None else argv)])
    atomic_write_json(Path(args.out), {"command": command, "torch": torch.__version__, "threads": 1,
                                       "epsilon": args.epsilon, "images": len(uploads), "rounds": args.rounds,
                                       "targets_ms": TARGETS_MS, "architectures": rows, "compare_pgd": compare,
                                       "pgd_median_arch_p50_ms": median_pgd, "fgsm_added_max_ms": worst_added})
    return 0


if __name__ == "__main__":
    sys.exit(main())
