"""Latency of attacking one upload, per architecture, beside the plain served prediction (issue 45, item 8).

    python bench/attack_latency.py [--rounds 2] [--epsilon 2] [--arch vgg --arch resnet] [--out FILE.json]

One image at a time, one CPU thread, in-process (no HTTP): the repository's eleven example photos (ten
validation images and the cat), each decoded once. Per architecture, the p50 over the images and rounds of
- predict: the upload's model view, normalised, and its served probabilities (six views), as /predict computes;
- FGSM and PGD-10 at ``--epsilon``: ``robustness.adversarial.attack_image`` on the served model given that
  prediction, the whole of what an attacked /predict adds: the attack, the 8-bit rounding and the attacked
  file's probabilities (PGD stops when an image is fooled, so an image that falls early costs fewer steps);
- the smallest budget that flips the image (``smallest_epsilon``, PGD from 1/255 up), first round only.
Then Compare's attack: PGD-10 on the cat against all the architectures in turn, as one request would.
Targets: FGSM adds at most 100 ms to predict's p50; PGD-10 at most 1 s p50 for the median architecture;
Compare's attack at most 10 s. Wall-clock and CPU time both: on a shared machine the wall clock measures the
load as much as the code. Prints a markdown table and writes the figures as JSON (``--out``).
"""
from __future__ import annotations

import argparse
import os
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


def timed(fn, *args) -> tuple[float, float, object]:
    """Wall-clock and CPU milliseconds of ``fn(*args)`` (one thread: the CPU time is what an idle core would
    take, the wall time what this machine's load made of it), and its result."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu), out


def measure(arch: str, uploads, rounds: int, epsilon: float) -> dict:
    clf = served_classifier(CHECKPOINTS / arch)
    config = clf.model.config

    def predict(image):
        x = to_tensor(image, config)
        with torch.inference_mode():
            return served_probs(clf.model, x, clf.temperature)

    def attacked(image, attack, probs):
        return attack_image(clf, model_view(image, config), attack, epsilon, probs_before=probs)

    for image in uploads[:2]:  # warm-up: the first calls allocate
        attacked(image, "pgd", predict(image)[0].numpy())
    names = ("predict", "fgsm", "pgd", "smallest_epsilon")
    wall, cpu = {name: [] for name in names}, {name: [] for name in names}
    fooled = {"fgsm": 0, "pgd": 0}

    def record(name, fn, *args):
        wall_ms, cpu_ms, out = timed(fn, *args)
        wall[name].append(wall_ms)
        cpu[name].append(cpu_ms)
        return out

    for round_ in range(rounds):
        for image in uploads:
            probs = record("predict", predict, image)
            for attack in ("fgsm", "pgd"):  # on top of the prediction, which the app has already made
                fooled[attack] += record(attack, attacked, image, attack, probs[0].numpy()).fooled
            if round_ == 0:
                record("smallest_epsilon", smallest_epsilon, clf, model_view(image, config))
    calls = rounds * len(uploads)
    return {**{name: percentiles(wall[name], 1) for name in names},
            **{f"{name}_cpu": percentiles(cpu[name], 1) for name in names},
            "fgsm_fooled": f"{fooled['fgsm']}/{calls}", "pgd_fooled": f"{fooled['pgd']}/{calls}"}


def compare_attack(archs, upload, epsilon: float, repeats: int = 3) -> dict:
    """PGD-10 on one upload against every architecture in turn (the models loaded beforehand, as served)."""
    classifiers = [served_classifier(CHECKPOINTS / arch) for arch in archs]
    views = [model_view(upload, clf.model.config) for clf in classifiers]
    runs = [timed(lambda: [attack_image(clf, view, "pgd", epsilon) for clf, view in zip(classifiers, views)])
            for _ in range(repeats)]
    return {"wall": percentiles([run[0] for run in runs], 1), "cpu": percentiles([run[1] for run in runs], 1)}


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
    load_before = os.getloadavg()[0]  # the machine's other work distorts the timings: reported beside them
    print(f"torch {torch.__version__}, 1 CPU thread, one image at a time, {len(uploads)} images x {args.rounds} "
          f"rounds, epsilon {args.epsilon:g}/255; load average {load_before:.1f} on {os.cpu_count()} cores\n")
    print("Each cell: p50 wall-clock ms / p50 CPU ms (one thread; CPU time is what an idle core would take).\n")
    print("| architecture | predict | FGSM adds | FGSM fooled | PGD-10 adds | PGD-10 fooled | smallest epsilon |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = {}

    def cell(row, name):
        return f"{row[name]['p50_ms']:.0f} / {row[name + '_cpu']['p50_ms']:.0f}"

    for arch in archs:
        row = rows[arch] = measure(arch, uploads, args.rounds, args.epsilon)
        print(f"| {arch} | {cell(row, 'predict')} | {cell(row, 'fgsm')} | {row['fgsm_fooled']} | {cell(row, 'pgd')} | "
              f"{row['pgd_fooled']} | {cell(row, 'smallest_epsilon')} |", flush=True)
    compare = compare_attack(archs, uploads[-1], args.epsilon)
    summary = {}
    for clock, suffix in (("wall", ""), ("cpu", "_cpu")):
        summary[clock] = {
            "pgd_median_arch_p50_ms": statistics.median(row["pgd" + suffix]["p50_ms"] for row in rows.values()),
            "fgsm_added_max_p50_ms": max(row["fgsm" + suffix]["p50_ms"] for row in rows.values()),
            "compare_pgd_p50_ms": compare[clock]["p50_ms"]}
        figures = summary[clock]
        print(f"\n{clock}: PGD-10 adds {figures['pgd_median_arch_p50_ms']:.0f} ms for the median architecture "
              f"(target {TARGETS_MS['pgd_median_arch']}); FGSM adds at most {figures['fgsm_added_max_p50_ms']:.0f}"
              f" ms (target {TARGETS_MS['fgsm_added']}); Compare's PGD-10 on the cat against all {len(archs)}: "
              f"{figures['compare_pgd_p50_ms'] / 1000:.1f} s (target {TARGETS_MS['compare_pgd'] / 1000:.0f} s)")
    command = shlex.join(["python", "bench/attack_latency.py", *(sys.argv[1:] if argv is None else argv)])
    atomic_write_json(Path(args.out), {"command": command, "torch": torch.__version__, "threads": 1,
                                       "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                                       "cpu_count": os.cpu_count(), "epsilon": args.epsilon, "images": len(uploads),
                                       "rounds": args.rounds,
                                       "targets_ms": TARGETS_MS, "architectures": rows, "compare_pgd": compare,
                                       "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
