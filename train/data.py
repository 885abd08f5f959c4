"""Data: any ImageFolder (directory, .tar or .tar.gz) or torchvision's CIFAR-10, decoded once.

Images are decoded a single time into one uint8 tensor (N x 3 x S x S) and cached on disk as
safetensors, keyed by the source's identity, so the next run starts in seconds. uint8 is a quarter the
size of float32, cheap to keep on the training device and to move; conversion to float happens per batch.
``prepare_data`` puts a training run's split there (``TrainingData``).
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from architectures.checkpoint import atomic_save_tensors
from preprocess import to_square_rgb
from .config import TrainConfig
from .env import RunEnv

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
CACHE_VERSION = "1"


class DataError(ValueError):
    """The data source is missing, empty or unreadable."""


@dataclass
class ImageSet:
    images: torch.Tensor       # uint8, N x 3 x S x S
    labels: torch.Tensor       # int64, N
    class_names: list[str]
    source: str                # human-readable description of where the images came from


@dataclass
class TrainingData:
    """One run's images on the training device as uint8, split, with the normalisation they are trained with."""

    image_set: ImageSet
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    local_batch: int      # images per step on this process
    steps_per_epoch: int


def _members_from_folder(root: Path):
    """(class name, relative path, bytes loader) for ImageFolder layout: root/<class>/<image>."""
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for file in sorted(class_dir.rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                yield class_dir.name, str(file.relative_to(root)), file.read_bytes


def _members_from_tar(path: Path):
    """The same for a tar(.gz) of an ImageFolder; a single top folder (like ``train/``) is skipped."""
    with tarfile.open(path) as archive:
        files = [m for m in archive.getmembers() if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES]
        parts = [Path(m.name).parts for m in files]
        depth = min((len(p) for p in parts), default=0)
        prefix = 1 if depth >= 3 and len({p[0] for p in parts}) == 1 else 0
        for member, part in sorted(zip(files, parts), key=lambda item: item[1]):
            if len(part) - prefix < 2:
                continue  # a loose file at the top has no class folder
            yield part[prefix], "/".join(part[prefix:]), (lambda m=member: archive.extractfile(m).read())


def _source_key(path: Path, image_size: int) -> str:
    """Identity of a source for the cache: content hash for archives, names/sizes/mtimes for folders."""
    digest = hashlib.sha256(f"{CACHE_VERSION}:{image_size}".encode())
    if path.is_file():
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    else:
        for file in sorted(path.rglob("*")):
            if file.is_file():
                stat = file.stat()
                digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def decode_image_folder(path: Path, image_size: int, progress: bool = True) -> ImageSet:
    from tqdm import tqdm

    if path.is_dir():
        members = _members_from_folder(path)
    elif tarfile.is_tarfile(path):
        members = _members_from_tar(path)
    else:
        raise DataError(f"{path} is neither an ImageFolder directory nor a .tar/.tar.gz of one")
    arrays, class_of_image, skipped = [], [], []
    for class_name, name, read in tqdm(members, desc=f"decoding {path.name}", unit="img", disable=not progress):
        try:
            with Image.open(io.BytesIO(read())) as image:
                arrays.append(to_square_rgb(image, image_size))
            class_of_image.append(class_name)
        except (OSError, ValueError, Image.DecompressionBombError):
            skipped.append(name)
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[:3]}")
    class_names = sorted(set(class_of_image))
    if len(class_names) < 2:
        raise DataError(f"{path} holds {len(arrays)} readable image(s) in {len(class_names)} class folder(s); "
                        "need an ImageFolder layout (one sub-folder per class) with at least two classes")
    index = {name: i for i, name in enumerate(class_names)}
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([index[c] for c in class_of_image], dtype=torch.int64)
    return ImageSet(images, labels, class_names, f"ImageFolder {path.name}")


def _load_torchvision_cifar10(root: Path) -> ImageSet:
    from torchvision.datasets import CIFAR10

    try:
        dataset = CIFAR10(str(root), train=True, download=True)  # the training split only, never the test split
    except Exception as error:
        raise DataError(f"could not download CIFAR-10 with torchvision ({error}); offline, pass --data PATH to "
                        "an ImageFolder or a .tar.gz of one (this project's copy: "
                        "../shared/data/cifar10-jpeg/train.tar.gz)") from error
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.tensor(dataset.targets), list(dataset.classes), "torchvision CIFAR10 train")


def load_images(data: str, image_size: int = 32, cache_dir: str | Path = "data/cache",
                progress: bool = True) -> ImageSet:
    """Load ``data`` ("cifar10" or a path), through the on-disk cache."""
    cache_dir = Path(cache_dir)
    if data == "cifar10":
        return _load_torchvision_cifar10(cache_dir / "torchvision")
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist")
    if path.is_dir() and not any(path.iterdir()):
        raise DataError(f"data folder {path} is empty; expected one sub-folder of images per class")
    cache_file = cache_dir / f"{path.name}-{_source_key(path, image_size)}.safetensors"
    if cache_file.is_file():
        tensors = load_file(cache_file)
        meta = json.loads(tensors["meta"].numpy().tobytes().decode())
        return ImageSet(tensors["images"], tensors["labels"], meta["class_names"], meta["source"])
    image_set = decode_image_folder(path, image_size, progress)
    meta = torch.frombuffer(bytearray(json.dumps({"class_names": image_set.class_names,
                                                  "source": image_set.source}).encode()), dtype=torch.uint8)
    atomic_save_tensors({"images": image_set.images, "labels": image_set.labels, "meta": meta}, cache_file)
    return image_set


def split_train_val(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded, per-class split: ``val_fraction`` of every class (at least one image) is held out.

    For CIFAR-10's 50,000 training images and 0.1 that is 500 per class, 5,000 in all. The split depends
    only on the labels, the fraction and the seed, never on the training seed.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for label in labels.unique(sorted=True):
        members = (labels == label).nonzero().flatten()
        if len(members) < 2:
            raise DataError(f"class {int(label)} has {len(members)} image(s); need at least 2 to split")
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = max(1, round(len(members) * val_fraction))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


def prepare_data(cfg: TrainConfig, env: RunEnv) -> TrainingData:
    """Decode (or read from the cache) the images, split off the validation images, move both to the device,
    and take the normalisation statistics of the training split."""
    device = env.device
    image_set = load_images(cfg.data, cfg.image_size, cfg.cache_dir, progress=cfg.progress and env.is_main)
    train_idx, val_idx = split_train_val(image_set.labels, cfg.val_fraction, cfg.split_seed)
    train_x, train_y = image_set.images[train_idx].to(device), image_set.labels[train_idx].to(device)
    val_x, val_y = image_set.images[val_idx].to(device), image_set.labels[val_idx].to(device)
    # Normalisation statistics of the training split only (RGB, pixel values in [0, 1]).
    pixels = train_x.float().div(255)
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    del pixels
    if cfg.batch_size % env.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {env.world_size} processes")
    steps_per_epoch = len(train_y) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_y)} images, fewer than one batch of {cfg.batch_size}")
    return TrainingData(image_set, train_x, train_y, val_x, val_y, mean, std, cfg.batch_size // env.world_size,
                        steps_per_epoch)


def checkpoint_split(config: dict, image_set: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of ``image_set`` as the checkpoint ``config`` describes was split: the
    fraction and seed its recipe records. ``DataError`` when the data's classes are not the checkpoint's."""
    if image_set.class_names != config["class_names"]:
        raise DataError(f"the data's classes {image_set.class_names} differ from the checkpoint's "
                        f"{config['class_names']}")
    recipe = config.get("recipe", {})
    return split_train_val(image_set.labels, recipe.get("val_fraction", 0.1), recipe.get("split_seed", 0))


def describe_split(image_set: ImageSet, val_fraction: float, seed: int, n_val: int) -> str:
    return (f"{n_val} images: {val_fraction:.0%} of each class of {image_set.source}, chosen by "
            f"train.data.split_train_val with split seed {seed}; never trained on")
