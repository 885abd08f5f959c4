"""Inference speed and size of every shipped checkpoint: batch-1 latency, batch throughput, params, MACs.

    python bench/inference.py [--archs resnet,senet] [--calls 200] [--json out.json]
    python bench/inference.py --archs vgg --candidate 'vgg={"width_multiplier": 0.75}'   # a wider VGG too

Per architecture with a checkpoint in ``--checkpoints``: batch-1 latency (p50/p95 over ``--calls`` calls
after ``--warmup``) of the model alone and p50 of the prediction the app serves (shifted and mirrored
copies in one batch, ``preprocess.served_probs``), and throughput at ``--batch-size`` (images/s over
``--batches`` batches after one warm-up batch), under ``torch.inference_mode``, fp32, the layout the app
serves (``serve.store.for_serving``: channels_last weights, input N x 3 x S x S) on the CPU, and on CUDA as
well when one is present (unless ``--no-cuda``). Also parameters, MACs per image (``architectures.measure.count_macs``),
the size of ``model.safetensors`` and the checkpoint's validation accuracy. Prints a markdown table.

``--candidate ARCH=JSON`` adds an untrained model of other settings (``python -m train --arch-args``'s), saved
as a float16 checkpoint would be: whether a wider net would still meet the app's latency targets and the
size budget can be known before any GPU time is spent on training it (latency does not depend on the
weights' values).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from timing import percentiles  # noqa: E402  (bench/ is on sys.path when this file runs)

from architectures import CheckpointError, create_model, list_models, load_pretrained, save_pretrained  # noqa: E402
from architectures.checkpoint import WEIGHTS_NAME, atomic_write_json  # noqa: E402
from architectures.measure import count_macs  # noqa: E402
from preprocess import served_probs  # noqa: E402
from serve.store import for_serving  # noqa: E402
from train.env import describe_hardware  # noqa: E402
from train.trainer import parse_arch_args, synchronize  # noqa: E402


def latency_ms(forward, x: torch.Tensor, calls: int, warmup: int) -> dict:
    """p50 and p95 (nearest rank) of single calls of ``forward(x)`` (a model, say), in milliseconds."""
    device = x.device
    with torch.inference_mode():
        for _ in range(warmup):
            forward(x)
        synchronize(device)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            forward(x)
            synchronize(device)  # a CUDA call returns before the GPU is done
            times.append((time.perf_counter() - start) * 1000)
    figures = percentiles(times)
    return {"p50_ms": figures["p50_ms"], "p95_ms": figures["p95_ms"], "calls": calls}


def throughput(model, x: torch.Tensor, batches: int) -> float:
    """Images per second over ``batches`` forward passes of the batch ``x``, after one warm-up batch."""
    with torch.inference_mode():
        model(x)
        synchronize(x.device)
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        synchronize(x.device)
    return batches * len(x) / (time.perf_counter() - start)


def measure(folder: Path, devices: list[torch.device], calls: int, warmup: int, batch_size: int, batches: int,
            candidate: str = "") -> dict:
    """One table row: the checkpoint in ``folder``, or the untrained ``candidate`` settings it is saved with."""
    model = for_serving(load_pretrained(folder))
    config = model.config
    size = config["image_size"]
    row = {"arch": config["arch"], "display_name": config.get("display_name", config["arch"]),
           "val_accuracy": None if candidate else config.get("val_accuracy"),
           "params": sum(p.numel() for p in model.parameters()),
           "macs": count_macs(model, size), "checkpoint_mb": (folder / WEIGHTS_NAME).stat().st_size / 1e6}
    if candidate:
        row["candidate"] = candidate
    generator = torch.Generator().manual_seed(0)
    one = torch.randn(1, 3, size, size, generator=generator)
    batch = torch.randn(batch_size, 3, size, size, generator=generator)
    for device in devices:
        model = model.to(device)
        row[device.type] = {"batch1": latency_ms(model, one.to(device), calls, warmup),
                            "served_batch1": latency_ms(partial(served_probs, model), one.to(device), calls,
                                                        warmup),
                            "batch_images_per_second": throughput(model, batch.to(device), batches)}
    return row


class CandidateError(ValueError):
    """A ``--candidate`` that cannot be built."""


def parse_candidate(text: str) -> tuple[str, dict]:
    """``ARCH=JSON`` -> (arch, settings), checked as ``python -m train --arch-args`` checks them."""
    arch, equals, settings = text.partition("=")
    if not equals or arch.strip() not in list_models():
        raise CandidateError(f"--candidate expects ARCH=JSON with ARCH one of {list_models()}, got {text!r}")
    try:
        return arch.strip(), parse_arch_args(arch.strip(), settings, 32, option=f"--candidate {arch.strip()}=")
    except ValueError as error:
        raise CandidateError(str(error)) from None


def save_candidate(arch: str, arch_args: dict, folder: Path) -> Path:
    """An untrained model of ``arch_args`` saved as training saves one (float16 weights), to measure it."""
    model = create_model(arch, **arch_args)
    config = {"display_name": type(model).display_name, "class_names": [str(i) for i in range(model.num_classes)],
              "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    return save_pretrained(model, folder, config, "float16")


def run(archs: list[str] | None = None, checkpoints: str | Path = ROOT / "checkpoints", calls: int = 200,
        warmup: int = 20, batch_size: int = 256, batches: int = 10, cuda: bool = True, threads: int = 0,
        progress: bool = True, candidates: list[str] = ()) -> dict:
    parsed = [parse_candidate(text) for text in candidates]  # a bad one fails before anything is measured
    if threads:
        torch.set_num_threads(threads)
    checkpoints = Path(checkpoints)
    unknown = [a for a in archs or [] if a not in list_models()]
    if unknown:
        raise SystemExit(f"unknown architecture(s) {unknown}; known: {list_models()}")
    devices = [torch.device("cpu")]
    if cuda and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    rows, skipped = [], {}
    for arch in tqdm(archs or list_models(), desc="inference", unit="arch", disable=not progress):
        folder = checkpoints / arch
        if not (folder / WEIGHTS_NAME).is_file():
            skipped[arch] = f"no {WEIGHTS_NAME} in {folder}"
            continue
        try:
            rows.append(measure(folder, devices, calls, warmup, batch_size, batches))
        except CheckpointError as error:
            skipped[arch] = str(error)
    for arch, arch_args in tqdm(parsed, desc="candidates", unit="model", disable=not (progress and parsed)):
        with tempfile.TemporaryDirectory() as scratch:
            folder = save_candidate(arch, arch_args, Path(scratch))
            label = json.dumps(arch_args, sort_keys=True, separators=(",", ":"))
            rows.append(measure(folder, devices, calls, warmup, batch_size, batches, candidate=label))
    return {"settings": {"calls": calls, "warmup": warmup, "batch_size": batch_size, "batches": batches,
                         "devices": [describe_hardware(d) for d in devices], "torch": torch.__version__,
                         "torch_threads": torch.get_num_threads(), "precision": "fp32"},
            "rows": rows, "skipped": skipped}


def markdown(result: dict) -> str:
    s = result["settings"]
    devices = [d for d in ("cpu", "cuda") if any(d in r for r in result["rows"])]
    header = "| architecture | val. accuracy | params | MACs | checkpoint |"
    rule = "|---|---:|---:|---:|---:|"
    for d in devices:
        name = d.upper() if d == "cpu" else "GPU"
        header += (f" {name} b1 p50 (ms) | {name} b1 p95 (ms) | {name} served b1 p50 (ms) |"
                   f" {name} b{s['batch_size']} (img/s) |")
        rule += "---:|---:|---:|---:|"
    lines = [f"{'; '.join(s['devices'])}, torch {s['torch']}, fp32, inference_mode; batch 1: {s['calls']} calls "
             f"after {s['warmup']}; batch {s['batch_size']}: {s['batches']} batches after 1", "", header, rule]
    for r in result["rows"]:
        accuracy = f"{100 * r['val_accuracy']:.2f}%" if r["val_accuracy"] is not None else "-"
        name = f"`{r['arch']}` `{r['candidate']}` (untrained)" if r.get("candidate") else f"`{r['arch']}`"
        line = (f"| {r['display_name']} ({name}) | {accuracy} | {r['params'] / 1e6:.2f} M | "
                f"{r['macs'] / 1e6:.0f} M | {r['checkpoint_mb']:.1f} MB |")
        for d in devices:
            m = r[d]
            line += (f" {m['batch1']['p50_ms']:.2f} | {m['batch1']['p95_ms']:.2f} | "
                     f"{m['served_batch1']['p50_ms']:.2f} | {m['batch_images_per_second']:.0f} |")
        lines.append(line)
    for arch, why in result["skipped"].items():
        lines.append(f"\nSkipped `{arch}`: {why}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--archs", default="", help="comma-separated architectures; default: every one")
    parser.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="one sub-folder per architecture")
    parser.add_argument("--calls", type=int, default=200, help="timed batch-1 calls per architecture and device")
    parser.add_argument("--warmup", type=int, default=20, help="untimed batch-1 calls first")
    parser.add_argument("--batch-size", type=int, default=256, help="batch of the throughput figure")
    parser.add_argument("--batches", type=int, default=10, help="timed batches of the throughput figure")
    parser.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=True,
                        help="measure on CUDA too when one is present")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    parser.add_argument("--candidate", action="append", default=[], metavar="ARCH=JSON",
                        help="also an untrained model of these settings (as --arch-args takes them); repeatable")
    args = parser.parse_args(argv)
    if min(args.calls, args.batch_size, args.batches) < 1 or args.warmup < 0:
        parser.error("--calls, --batch-size and --batches must be positive, --warmup not negative")
    archs = [a.strip() for a in args.archs.split(",") if a.strip()] or None
    try:
        result = run(archs, args.checkpoints, args.calls, args.warmup, args.batch_size, args.batches, args.cuda,
                     args.threads, args.progress, args.candidate)
    except CandidateError as error:
        parser.error(str(error))
    print(markdown(result))
    if args.json:
        atomic_write_json(Path(args.json), result)
    return result


if __name__ == "__main__":
    main()
