"""A yardstick for the data: airbench94's published recipe, trained on the zoo's own split of ``--data``.

    python bench/airbench_reference.py --data ../shared/data/cifar10-jpeg/train.tar.gz [--epochs 9.9] [--seed 0]

airbench94 (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024) is the best-studied
fast CIFAR-10 recipe: on the original images it averages 94.01% test accuracy (with its test-time
augmentation, the one the app serves) over 1,000 runs of 9.9 epochs. This script rewrites that recipe
from its published hyperparameters (network, whitening initialisation, decoupled SGD settings, Lookahead,
alternating flips, label smoothing) and runs it here: trained on the zoo's training split (45,000 of the
50,000 images) and scored on the zoo's fixed validation split, as every checkpoint is. What it reaches
below 94% is what this copy of the data costs a recipe known to reach 94% (the JPEG compression, and a
tenth fewer training images): the yardstick for goals taken from public figures on the original images.
It trains in float32 on the CPU (about 45 minutes on 2 cores) or on a GPU; nothing is saved but the JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from architectures.checkpoint import atomic_write_json  # noqa: E402
from preprocess import normalize, served_probs  # noqa: E402
from train.augment import random_flip, random_translate  # noqa: E402
from train.data import load_images, split_train_val  # noqa: E402
from train.env import describe_hardware, pick_device  # noqa: E402

# airbench94's hyperparameters, in its own decoupled form.
HYP = {
    "batch_size": 1024,
    "lr": 11.5,              # learning rate per 1024 examples
    "momentum": 0.85,        # Nesterov
    "weight_decay": 0.0153,  # per 1024 examples, decoupled from the learning rate
    "bias_scaler": 64.0,     # BatchNorm biases learn this many times faster (no faster decay)
    "label_smoothing": 0.2,
    "lookahead_start_epochs": 3, "lookahead_every": 5, "lookahead_decay": 0.95, "lookahead_pow": 3.0,
    "whiten_bias_epochs": 3,  # the whitening layer's bias trains this long, then stays
    "translate": 2,          # pixels, reflect-padded
    "widths": (64, 256, 256),
    "whitening_kernel": 2,
    "batchnorm_momentum": 0.6,  # airbench's convention: the share of the old running statistic kept
    "logit_scale": 1 / 9,
}


class ConvGroup(nn.Sequential):
    """conv, 2x2 max-pool, BatchNorm, GELU, conv, BatchNorm, GELU; each conv starts as the identity on
    the channels it shares with its input."""

    def __init__(self, in_channels: int, out_channels: int):
        layers = []
        for index, (cin, cout) in enumerate([(in_channels, out_channels), (out_channels, out_channels)]):
            conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            nn.init.dirac_(conv.weight.data[:cin])
            # BatchNorm's scale stays 1; only its shift learns.
            norm = nn.BatchNorm2d(cout, eps=1e-12, momentum=1 - HYP["batchnorm_momentum"])
            norm.weight.requires_grad_(False)
            layers += [conv] + ([nn.MaxPool2d(2)] if index == 0 else []) + [norm, nn.GELU()]
        super().__init__(*layers)


def build_net(num_classes: int) -> nn.Sequential:
    kernel = HYP["whitening_kernel"]
    whiten = nn.Conv2d(3, 2 * 3 * kernel ** 2, kernel, bias=True)
    whiten.weight.requires_grad_(False)  # set from the data once, never trained
    nn.init.zeros_(whiten.bias)
    layers, channels = [whiten, nn.GELU()], whiten.out_channels
    for width in HYP["widths"]:
        layers.append(ConvGroup(channels, width))
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes, bias=False))


@torch.no_grad()
def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Filters = eigenvectors of the patches' second-moment matrix / sqrt(eigenvalue), each with its negative."""
    height, width = conv.kernel_size
    patches = images.unfold(2, height, 1).unfold(3, width, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * height * width)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (eigenvectors.T / (eigenvalues[:, None] + eps).sqrt()).reshape(-1, 3, height, width)
    conv.weight.copy_(torch.cat([filters, -filters]))


def lr_factor(step: int, total: int) -> float:
    """airbench's triangle: 0.2 at the start, 1 at 23% of the steps, 0.07 at the end."""
    peak = int(0.23 * total)
    if step < peak:
        return 0.2 + 0.8 * step / peak
    return 1.0 - 0.93 * (step - peak) / max(1, total - peak)


def run(data: str, epochs: float = 9.9, seed: int = 0, batch_size: int = HYP["batch_size"], device: str = "auto",
        cache_dir: str = "data/cache", progress: bool = True) -> dict:
    device = pick_device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    image_set = load_images(data, 32, cache_dir, progress=progress)
    train_index, val_index = split_train_val(image_set.labels, 0.1, 0)  # the zoo's split
    train_x, train_y = image_set.images[train_index].to(device), image_set.labels[train_index].to(device)
    val_x, val_y = image_set.images[val_index].to(device), image_set.labels[val_index].to(device)
    pixels = train_x.float().div(255)
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    train_x, val_x = normalize(train_x, mean, std), normalize(val_x, mean, std)

    net = build_net(len(image_set.class_names)).to(device)
    # 5,000 training images at random: the split is stored in class order, and whitening on the first
    # 5,000 would learn the patches of airplanes.
    init_whitening(net[0], train_x[torch.randperm(len(train_y), generator=generator)[:5000].to(device)])
    model = lambda x: net(x) * HYP["logit_scale"]  # noqa: E731  (small logits at the start)

    # Decoupled hyperparameters to PyTorch's SGD (summed loss), as airbench converts them.
    kilostep = 1024 * (1 + 1 / (1 - HYP["momentum"]))
    lr, decay = HYP["lr"] / kilostep, HYP["weight_decay"] * batch_size / kilostep
    norm_biases = [p for name, p in net.named_parameters() if p.requires_grad and p.ndim == 1 and name != "0.bias"]
    others = [p for name, p in net.named_parameters() if p.requires_grad and (p.ndim > 1 or name == "0.bias")]
    bias_lr = lr * HYP["bias_scaler"]
    optimizer = torch.optim.SGD([{"params": norm_biases, "lr": bias_lr, "weight_decay": decay / bias_lr},
                                 {"params": others, "lr": lr, "weight_decay": decay / lr}],
                                momentum=HYP["momentum"], nesterov=True)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    steps_per_epoch = len(train_y) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_y)} training images are fewer than one batch of {batch_size}")
    total = math.ceil(steps_per_epoch * epochs)

    slow, step, history, started = None, 0, [], time.perf_counter()
    flipped = random_flip(train_x, generator)  # each image's own side; all flip together every other epoch
    for epoch in range(math.ceil(epochs)):
        net[0].bias.requires_grad_(epoch < HYP["whiten_bias_epochs"])
        net.train()
        images = flipped.flip(3) if epoch % 2 else flipped
        order = torch.randperm(len(train_y), generator=generator).to(device)
        bar = tqdm(range(steps_per_epoch), desc=f"airbench94 {epoch + 1}/{math.ceil(epochs)}", disable=not progress,
                   leave=False)
        for index in bar:
            if step >= total:
                break
            batch = order[index * batch_size:(index + 1) * batch_size]
            x = random_translate(images[batch], HYP["translate"], generator)
            loss = F.cross_entropy(model(x), train_y[batch], label_smoothing=HYP["label_smoothing"], reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * lr_factor(step, total)
            optimizer.step()
            step += 1
            # Lookahead: every few steps the weights move to an average that tightens as training ends.
            if epoch >= HYP["lookahead_start_epochs"] and step % HYP["lookahead_every"] == 0:
                state = [t for t in net.state_dict().values() if t.dtype.is_floating_point]
                if slow is None:
                    slow = [t.clone() for t in state]
                else:
                    keep = HYP["lookahead_decay"] ** HYP["lookahead_every"] * (step / total) ** HYP["lookahead_pow"]
                    for average, current in zip(slow, state):
                        average.lerp_(current, 1 - keep)
                        current.copy_(average)
        if slow is not None:
            for average, current in zip(slow, [t for t in net.state_dict().values() if t.dtype.is_floating_point]):
                current.copy_(average)
        net.eval()
        with torch.inference_mode():
            correct = sum((model(chunk).argmax(1) == labels).sum().item()
                          for chunk, labels in zip(val_x.split(1000), val_y.split(1000)))
        history.append({"epoch": epoch + 1, "val_accuracy": correct / len(val_y),
                        "seconds": round(time.perf_counter() - started, 1)})
        if progress:
            print(json.dumps(history[-1]), flush=True)
    with torch.inference_mode():
        correct_tta = sum((served_probs(model, chunk).argmax(1) == labels).sum().item()
                          for chunk, labels in zip(val_x.split(500), val_y.split(500)))
    return {"recipe": "airbench94 (rewritten from its published hyperparameters)", "data": image_set.source,
            "split": f"trained on {len(train_y)} images, scored on the zoo's {len(val_y)}-image validation split",
            "epochs": epochs, "seed": seed, "batch_size": batch_size, "history": history,
            "val_accuracy": history[-1]["val_accuracy"], "val_accuracy_tta": correct_tta / len(val_y),
            "train_seconds": history[-1]["seconds"], "hardware": describe_hardware(device, 1),
            "published_test_accuracy_tta_on_original_images": 0.9401}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="cifar10", help="'cifar10' or an ImageFolder path / .tar.gz")
    parser.add_argument("--epochs", type=float, default=9.9, help="airbench94's 9.9")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, order and augmentation")
    parser.add_argument("--batch-size", type=int, default=HYP["batch_size"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", default="data/cache")
    parser.add_argument("--json", default="", help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.data, args.epochs, args.seed, args.batch_size, args.device, args.cache_dir)
    if args.json:
        atomic_write_json(Path(args.json), result)
    print(f"airbench94 on {result['data']}, {result['split']}: {result['val_accuracy']:.2%} alone, "
          f"{result['val_accuracy_tta']:.2%} with the app's test-time augmentation, after {args.epochs} epochs "
          f"in {result['train_seconds'] / 60:.1f} min ({result['hardware']}); published on the original images: "
          f"94.01% (test split, with the same test-time augmentation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
