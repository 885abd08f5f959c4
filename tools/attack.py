"""Attack one image as the app serves it and write the attacked view the model sees as an 8-bit PNG.

    python -m tools.attack IMAGE --arch NAME --attack {fgsm,pgd} --epsilon E [--target CLASS] --out FILE.png

``E`` is the L-infinity budget in 1/255 of pixel value (0.5, 1, 2, 4 or 8) on the checkpoint's 32 x 32 view;
the attack aims at the served prediction (the average over six shifted and mirrored views, at the checkpoint's
temperature), away from its label or towards ``--target`` (a class name or index). Seeded (``--seed``): the
same image and settings write the same file. An 8-bit pixel moves in whole levels, so the file lies within
floor(E) levels of the view; uploaded again, it is classified as printed here.

Exit status: 0 when the file fools the model, 1 when it does not (the file is written all the same), 2 for bad
input. This command line is a contract for outside checks (issue 45): keep it stable.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from architectures import CheckpointError, check_name, load_pretrained
from architectures.checkpoint import WEIGHTS_NAME, atomic_write_bytes, file_sha256
from preprocess import ImageDecodeError, load_image, model_view
from robustness.adversarial import APP_ATTACKS, EPSILONS, NONE, PixelClassifier, attack_image, check_epsilon
from serve.predict import served_temperature
from serve.store import for_serving

ROOT = Path(__file__).resolve().parent.parent


def served_classifier(folder) -> PixelClassifier:
    """A checkpoint folder's model as the app serves it, as a function of pixels."""
    folder = Path(folder)
    model = for_serving(load_pretrained(folder))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    temperature = served_temperature(model.config, file_sha256(folder / WEIGHTS_NAME))
    return PixelClassifier.of(model, served=True, temperature=temperature)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.attack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="an image file (any size: the model sees its 32 x 32 view)")
    parser.add_argument("--arch", required=True, help="the architecture whose served prediction is attacked")
    parser.add_argument("--attack", required=True, choices=[a for a in APP_ATTACKS if a != NONE])
    parser.add_argument("--epsilon", required=True, help=f"the budget in 1/255: {', '.join(map(str, EPSILONS))}")
    parser.add_argument("--target", default=None, help="a class name or index to aim at (default: untargeted)")
    parser.add_argument("--out", required=True, help="the PNG to write (the attacked 32 x 32 view)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", default=os.environ.get("CHECKPOINT_DIR", str(ROOT / "checkpoints")))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        epsilon = check_epsilon(args.epsilon)
        if not args.out.lower().endswith(".png"):
            raise ValueError(f"--out must name a .png file, got {args.out!r}")
        clf = served_classifier(Path(args.checkpoint_dir) / check_name(args.arch))
        names = clf.model.config["class_names"]
        target = args.target
        if target is not None and target not in names and target.strip().isdigit():
            target = int(target)
        view = model_view(load_image(args.image), clf.model.config)
        result = attack_image(clf, view, args.attack, epsilon, target, names, args.seed)
        atomic_write_bytes(Path(args.out), result.png_bytes())
    except (CheckpointError, ImageDecodeError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    before, after = result.label, result.new_label
    print(f"{args.arch}, {args.attack} at {epsilon:g}/255: {names[before]} ({result.probs_before[before]:.1%}) -> "
          f"{names[after]} ({result.probs_after[after]:.1%}); largest change {abs(result.perturbation).max()} "
          f"level(s); {'fooled' if result.fooled else 'not fooled'}; wrote {args.out}")
    return 0 if result.fooled else 1


if __name__ == "__main__":
    sys.exit(main())
