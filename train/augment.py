"""Batch augmentation on the training device: no per-image PIL work in the hot loop.

Random values come from an explicit generator on the CPU, so a resumed run draws exactly the numbers an
uninterrupted one would; the image work runs wherever the images live.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from preprocess import TTA_COPIES, TTA_VIEWS, normalize, served_probs, translated  # noqa: F401  (shared with serving)


def random_translate(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the reflect-padded batch: each image shifted by up to ``padding`` pixels."""
    if padding <= 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4, mode="reflect")
    shift_y = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(images.device)
    shift_x = torch.randint(0, 2 * padding + 1, (batch,), generator=generator).to(images.device)
    rows = (shift_y[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (shift_x[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch_index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel_index = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch_index, channel_index, rows, cols]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left to right."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def random_cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Blank (to zero, the mean after normalisation) one ``size`` x ``size`` square per image."""
    if size <= 0:
        return images
    batch, _, height, width = images.shape
    centre_y = torch.randint(0, height, (batch,), generator=generator).to(images.device)
    centre_x = torch.randint(0, width, (batch,), generator=generator).to(images.device)
    ys = torch.arange(height, device=images.device)[None, :, None]
    xs = torch.arange(width, device=images.device)[None, None, :]
    inside = ((ys - centre_y[:, None, None]).abs() <= size // 2) & ((xs - centre_x[:, None, None]).abs() <= size // 2)
    return images.masked_fill(inside[:, None], 0.0)


def random_cutmix(images: torch.Tensor, labels: torch.Tensor, probability: float, generator: torch.Generator):
    """CutMix (Yun et al., 2019): with ``probability``, one random box of every image is replaced by the same
    box of a partner image from the batch (one box, one random pairing per batch).

    Returns (images, partner labels, share of each image still its own). The loss is that share of the
    loss on the image's own label plus the rest on its partner's. A ``probability`` of 0 draws nothing, so
    runs without CutMix keep their random streams (and their checkpoints stay reproducible).
    """
    if probability <= 0 or torch.rand((), generator=generator).item() >= probability:
        return images, labels, 1.0
    batch, _, height, width = images.shape
    kept = torch.rand((), generator=generator).item()  # the box's area share is uniform: Beta(1, 1)
    box_h, box_w = int(height * (1 - kept) ** 0.5), int(width * (1 - kept) ** 0.5)
    centre_y, centre_x = (int(torch.randint(0, side, (), generator=generator)) for side in (height, width))
    top, bottom = max(centre_y - box_h // 2, 0), min(centre_y + box_h - box_h // 2, height)
    left, right = max(centre_x - box_w // 2, 0), min(centre_x + box_w - box_w // 2, width)
    partner = torch.randperm(batch, generator=generator).to(images.device)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[partner, :, top:bottom, left:right]
    return mixed, labels[partner], 1 - (bottom - top) * (right - left) / (height * width)  # exact, after clipping


def augment_batch(images_uint8, mean, std, translate, cutout, generator):
    """Translate and flip on uint8 (cheaper to move), then normalise, then cut out."""
    images = random_flip(random_translate(images_uint8, translate, generator), generator)
    return random_cutout(normalize(images, mean, std), cutout, generator)
