"""Training throughput (images/s): this project's pipeline against the usual way, same model and data.

    python bench/train_throughput.py [--archs resnet,vgg,bn_convnet] [--steps 30] [--json out.json]

Both sides run forward + backward + optimizer step of the same architecture (same initial weights, same
optimizer from ``train.step.build_optimizer``, same batch size, same label smoothing) on the same
images, in one process, one after the other, and time ``--steps`` steps after ``--warmup`` untimed ones.

- project: ``train.data.load_images`` (decoded once, uint8 tensor on the device, from data/cache), batch
  augmentation, channels_last, bf16 autocast where ``train.step.use_bf16`` says it pays:
  ``train.step.train_step``, the very step of ``python -m train``'s hot loop.
- usual: torchvision ``ImageFolder`` over the extracted JPEGs, a ``DataLoader`` with ``--workers`` worker
  processes and per-image PIL transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
  Normalize), fp32, default memory layout, ``nn.CrossEntropyLoss``: how the seed project trained.
- model alone: the project's model, precision and layout stepping over one fixed, already augmented batch,
  with no data pipeline at all: the most any pipeline can reach on this model and machine. Its ratio to the
  usual side is the ceiling of the speed-up a faster pipeline can give; beyond it only the model's own
  arithmetic (precision, compilation) is left.

A ``.tar``/``.tar.gz`` given as ``--data`` is extracted once into ``--jpeg-dir`` for the usual side and
reused after. One-off costs (loading the cache, scanning the folder) are reported apart, not in images/s.
The usual side's workers may have a few batches queued when its clock starts (DataLoader prefetch, at
most workers x 2 batches), which flatters it slightly over short runs. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from architectures import create_model, list_models  # noqa: E402
from architectures.checkpoint import atomic_write_json  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.data import load_images  # noqa: E402
from train.env import describe_hardware, pick_device  # noqa: E402
from train.recipes import recipe_for  # noqa: E402
from train.augment import augment_batch  # noqa: E402
from train.step import build_optimizer, choose_precision, forward_backward, synchronize, train_step  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "train.tar.gz"
DEFAULT_ARCHS = "resnet,vgg,bn_convnet"
GOAL_RATIO = 3.0  # issue #6: the project's pipeline at least 3x the usual way on the 2-core CPU
DONE_MARKER = ".extracted"


def extract_once(archive: Path, target: Path, progress: bool = True) -> Path:
    """Extract ``archive`` into ``target`` unless a finished extraction is there; returns the ImageFolder root.

    Extraction goes to a temporary folder beside ``target`` that is renamed when complete, so a killed
    run leaves no half-extracted folder that a later run would take for whole.
    """
    if not (target / DONE_MARKER).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                for member in tqdm(members, desc=f"extracting {archive.name}", unit="file", disable=not progress):
                    tar.extract(member, staging, filter="data")
            (staging / DONE_MARKER).write_text(f"{archive.resolve()}\n")
            if target.exists():
                shutil.rmtree(target)  # an unfinished extraction from a killed run
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return image_folder_root(target)


def image_folder_root(folder: Path) -> Path:
    """The folder whose sub-folders are the classes: ``folder`` itself or its single top folder (``train/``)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and any(p.is_dir() for p in entries[0].iterdir()):
        return entries[0]
    return folder


def channel_stats(images_uint8: torch.Tensor, chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of pixels in [0, 1], a chunk at a time (no 600 MB float copy of CIFAR)."""
    total, total_sq, count = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for start in range(0, len(images_uint8), chunk):
        x = images_uint8[start:start + chunk].to(torch.float64).div_(255)
        total += x.sum((0, 2, 3))
        total_sq += x.square().sum((0, 2, 3))
        count += x.numel() // 3
    mean = total / count
    return mean.float(), (total_sq / count - mean.square()).clamp_min(0).sqrt().float()


def _timed(step, warmup: int, steps: int, device: torch.device, desc: str, progress: bool) -> float:
    """Seconds that ``steps`` calls of ``step`` take after ``warmup`` untimed ones."""
    bar = tqdm(total=warmup + steps, desc=desc, unit="step", disable=not progress, leave=False)
    for _ in range(warmup):
        step()
        bar.update()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
        bar.update()
    synchronize(device)  # the clock must read work done, not work queued
    elapsed = time.perf_counter() - started
    bar.close()
    return elapsed


def project_model(cfg: TrainConfig, num_classes: int, device):
    """The model, optimizer and precision (bf16 autocast, memory format) as ``python -m train`` sets them up."""
    precision = choose_precision(cfg, device)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, num_classes=num_classes).to(device, memory_format=precision.memory_format).train()
    return model, build_optimizer(model, cfg), precision


def measure_project(cfg: TrainConfig, images, labels, mean, std, num_classes, device, warmup, steps, progress) -> dict:
    """The steps of ``python -m train``'s hot loop (``train.step.train_step``), without the logging around them."""
    model, optimizer, precision = project_model(cfg, num_classes, device)
    train_x, train_y = images.to(device), labels.to(device)
    mean, std = mean.to(device), std.to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(train_y), generator=generator).to(device)
    position = 0

    def step():
        nonlocal order, position
        if position + cfg.batch_size > len(order):
            order, position = torch.randperm(len(train_y), generator=generator).to(device), 0
        batch = order[position:position + cfg.batch_size]
        position += cfg.batch_size
        train_step(model, optimizer, train_x[batch], train_y[batch], mean, std, cfg, precision, generator)

    seconds = _timed(step, warmup, steps, device, f"{cfg.arch} project", progress)
    return {"images_per_second": steps * cfg.batch_size / seconds, "seconds": seconds,
            "precision": "bf16 autocast" if precision.bf16 else "fp32", "channels_last": cfg.channels_last}


def measure_model_alone(cfg: TrainConfig, images, labels, mean, std, num_classes, device, warmup, steps,
                        progress) -> dict:
    """Forward, backward and update of the project's model on one fixed batch: no loading, no augmentation."""
    model, optimizer, precision = project_model(cfg, num_classes, device)
    generator = torch.Generator().manual_seed(cfg.seed)
    x = augment_batch(images[:cfg.batch_size].to(device), mean.to(device), std.to(device), cfg.translate, cfg.cutout,
                      generator).contiguous(memory_format=precision.memory_format)
    y = labels[:cfg.batch_size].to(device)

    def step():
        forward_backward(model, optimizer, x, y, precision.autocast, cfg.label_smoothing)
        optimizer.step()

    seconds = _timed(step, warmup, steps, device, f"{cfg.arch} model alone", progress)
    return {"images_per_second": steps * cfg.batch_size / seconds, "seconds": seconds}


def usual_loader(folder: Path, mean, std, batch_size: int, workers: int, device: torch.device):
    """torchvision ImageFolder + DataLoader with per-image PIL transforms, as the seed project had it."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean.tolist(), std.tolist()),
    ])
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       drop_last=True, pin_memory=device.type == "cuda")


def measure_usual(cfg: TrainConfig, loader, num_classes, device, warmup, steps, progress) -> dict:
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, num_classes=num_classes).to(device).train()
    optimizer = build_optimizer(model, cfg)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    iterator = iter(loader)

    def step():
        nonlocal iterator
        try:
            x, y = next(iterator)
        except StopIteration:  # fewer batches in the folder than steps: a new epoch, as a training loop would
            iterator = iter(loader)
            x, y = next(iterator)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()

    try:
        seconds = _timed(step, warmup, steps, device, f"{cfg.arch} usual", progress)
    finally:
        del iterator  # stops its worker processes before the next measurement starts
    return {"images_per_second": steps * cfg.batch_size / seconds, "seconds": seconds, "precision": "fp32",
            "channels_last": False}


def run(archs: list[str], data: str | Path = DEFAULT_DATA, jpeg_dir: str | Path = ROOT / "data" / "bench_jpeg",
        cache_dir: str | Path = ROOT / "data" / "cache", batch_size: int = 256, warmup: int = 5, steps: int = 30,
        workers: int = 2, device: str = "auto", threads: int = 0, progress: bool = True) -> dict:
    """Measure every architecture in ``archs``; returns the settings, one-off costs and a row per architecture."""
    unknown = [a for a in archs if a not in list_models()]
    if unknown:
        raise SystemExit(f"unknown architecture(s) {unknown}; known: {list_models()}")
    if threads:
        torch.set_num_threads(threads)
    device = pick_device(device)
    data = Path(data).expanduser()
    if not data.exists():
        raise SystemExit(f"data {data} does not exist")

    started = time.perf_counter()
    folder = extract_once(data, Path(jpeg_dir), progress) if data.is_file() else image_folder_root(data)
    extract_seconds = time.perf_counter() - started
    started = time.perf_counter()
    image_set = load_images(str(data), 32, cache_dir, progress=progress)
    load_seconds = time.perf_counter() - started
    images, labels = image_set.images, image_set.labels
    mean, std = channel_stats(images)
    num_classes = len(image_set.class_names)
    if len(labels) < batch_size:
        raise SystemExit(f"{data} holds {len(labels)} images, fewer than one batch of {batch_size}")
    started = time.perf_counter()
    loader = usual_loader(folder, mean, std, batch_size, workers, device)
    scan_seconds = time.perf_counter() - started
    if len(loader.dataset) != len(labels):
        raise SystemExit(f"the extracted folder {folder} holds {len(loader.dataset)} images, the cache "
                         f"{len(labels)}: not the same data (delete {jpeg_dir} to extract again)")

    rows = []
    for arch in archs:
        recipe = {**recipe_for(arch), "batch_size": batch_size}
        cfg = TrainConfig(arch=arch).resolved(recipe)
        project = measure_project(cfg, images, labels, mean, std, num_classes, device, warmup, steps, progress)
        usual = measure_usual(cfg, loader, num_classes, device, warmup, steps, progress)
        alone = measure_model_alone(cfg, images, labels, mean, std, num_classes, device, warmup, steps, progress)
        ratio = project["images_per_second"] / usual["images_per_second"]
        ceiling = alone["images_per_second"] / usual["images_per_second"]
        rows.append({"arch": arch, "project": project, "usual": usual, "ratio": ratio, "model_alone": alone,
                     "ceiling_ratio": ceiling})
        print(f"{arch}: project {project['images_per_second']:.0f} img/s, usual {usual['images_per_second']:.0f} "
              f"img/s, {ratio:.2f}x; model alone {alone['images_per_second']:.0f} img/s, {ceiling:.2f}x",
              file=sys.stderr, flush=True)
    return {
        "settings": {"batch_size": batch_size, "warmup_steps": warmup, "timed_steps": steps, "workers": workers,
                     "device": str(device), "hardware": describe_hardware(device), "torch": torch.__version__,
                     "torch_threads": torch.get_num_threads(), "images": len(labels), "data": str(data),
                     "jpeg_folder": str(folder)},
        "one_off_seconds": {"extract": round(extract_seconds, 2), "project_load_images": round(load_seconds, 2),
                            "usual_scan_folder": round(scan_seconds, 2)},
        "goal_ratio": GOAL_RATIO,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"{s['hardware']}, torch {s['torch']}, batch {s['batch_size']}, {s['timed_steps']} timed steps after "
             f"{s['warmup_steps']} warm-up, usual side with {s['workers']} DataLoader workers, {s['images']} images",
             "",
             "| architecture | project (img/s) | precision | usual (img/s) | ratio | >= 3x | model alone (img/s) "
             "| ceiling ratio |",
             "|---|---:|---|---:|---:|:-:|---:|---:|"]
    for r in result["rows"]:
        p, u, a = r["project"], r["usual"], r["model_alone"]
        lines.append(f"| {r['arch']} | {p['images_per_second']:.0f} | {p['precision']}"
                     f"{', channels_last' if p['channels_last'] else ''} | {u['images_per_second']:.0f} | "
                     f"{r['ratio']:.2f}x | {'yes' if r['ratio'] >= result['goal_ratio'] else 'no'} | "
                     f"{a['images_per_second']:.0f} | {r['ceiling_ratio']:.2f}x |")
    lines += ["", "Model alone: the same model, precision and layout stepping over one fixed batch with no data "
                  "pipeline; its ratio to the usual way is the most any input pipeline could gain."]
    o = result["one_off_seconds"]
    lines += ["", f"One-off, not in images/s: extracting the JPEGs {o['extract']:.1f} s (0 when already there), "
                  f"project loading its uint8 cache {o['project_load_images']:.1f} s, usual scanning the folder "
                  f"{o['usual_scan_folder']:.1f} s."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--archs", default=DEFAULT_ARCHS, help="comma-separated architectures")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="an ImageFolder directory or a .tar/.tar.gz of one")
    parser.add_argument("--jpeg-dir", default=str(ROOT / "data" / "bench_jpeg"),
                        help="where a --data archive is extracted for the usual side (once, reused)")
    parser.add_argument("--cache-dir", default=str(ROOT / "data" / "cache"), help="the project's decoded-image cache")
    parser.add_argument("--batch-size", type=int, default=256, help="images per step, both sides")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per side before the clock starts")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per side")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes, usual side")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.steps) < 1 or min(args.warmup, args.workers) < 0:
        parser.error("--batch-size and --steps must be positive, --warmup and --workers not negative")
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    result = run(archs, args.data, args.jpeg_dir, args.cache_dir, args.batch_size, args.warmup, args.steps,
                 args.workers, args.device, args.threads, args.progress)
    print(markdown(result))
    if args.json:
        atomic_write_json(Path(args.json), result)
    return result


if __name__ == "__main__":
    main()
