"""Finish a trained checkpoint folder: everything the app and the README read beside the weights, in one step.

    python -m tools.finish_checkpoint checkpoints/resnet --data ../shared/data/cifar10-jpeg/train.tar.gz

Into the folder, on the validation split its config records (decoded once, shared by every step):

1. the float32 evaluation, alone and with the app's test-time augmentation, into config.json
   (``val_accuracy``, ``val_accuracy_tta``, as ``train.evaluate --record``), and ``confusion.png``;
2. ``curves.png``, redrawn from ``log.jsonl`` where there is one;
3. the out-of-distribution threshold, config.json's ``ood`` (``tools.calibrate_ood``);
4. the CAM setting that explains it most faithfully, config.json's ``cam`` (``tools.choose_cam``; the
   slow step, a few minutes per checkpoint on a 2-core CPU; ``--skip-cam`` leaves it out);
5. for a model with squeeze-and-excitation blocks, ``se_profiles.safetensors`` (``tools.se_profiles``);
6. a linear probe per stage, ``probes.json`` and ``probes.safetensors`` (``tools.probes``: 5,000 training
   images, scored on the validation split; about a minute).
7. corruption robustness and calibration, ``robustness.json`` with its plots, and config.json's
   ``temperature`` (re-deriving ``ood`` on the scaled probabilities when it is adopted; ``tools.robustness``).
8. with ``--adversarial``, robustness to adversarial attacks (``tools.adversarial``: PGD and APGD-CE at five
   budgets, alone and served, on 500 validation images): ``adversarial.json``, ``adversarial.png`` and
   config.json's ``adversarial``. Hours on a 2-core CPU (minutes on a GPU), so it runs only when asked.

Each step replaces only its own fields of config.json, atomically. Bad input (no checkpoint, data of other
classes, too few images for the CAM choice) exits with 2 before anything is written; exit 1 means every
step ran but no CAM setting passed the sanity check within the time limit (any earlier ``cam`` is removed,
so the app falls back to Grad-CAM).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from architectures import CheckpointError, load_pretrained
from architectures.checkpoint import CONFIG_NAME, WEIGHTS_NAME, file_sha256
from explain.cam import METHODS
from explain.se import has_se
from serve.store import for_serving
from tools._config import update_config
from tools.adversarial import Settings as AdversarialSettings
from tools.adversarial import evaluate as measure_adversarial
from tools.adversarial import summary as adversarial_summary
from tools.calibrate_ood import describe, ood_entry
from tools.choose_cam import DEFAULT_MAX_MS, cam_entry, parse_methods, print_table, select, selection_images
from tools.probes import TRAIN_IMAGES, summary, write_probes
from tools.robustness import run as measure_robustness
from tools.robustness import summary as robustness_summary
from tools.se_profiles import write_se_profiles
from train.data import DataError, checkpoint_split, load_images
from train.evaluate import EvalConfig, measure, record_accuracy
from train.plots import plot_curves

LOG_NAME = "log.jsonl"


def finish(folder, data: str, cache_dir: str = "data/cache", skip_cam: bool = False, cam_methods=METHODS,
           cam_images: int = 200, cam_skip: int = 100, cam_sanity_images: int = 20, cam_max_ms: float = DEFAULT_MAX_MS,
           chosen_by: str = "", probe_images: int = TRAIN_IMAGES, adversarial: bool = False) -> dict:
    """Write the seven artefacts into ``folder``; returns what was written ({"accuracy", "accuracy_tta",
    "curves", "ood", "cam", "se_profiles", "probes", "robustness", "adversarial"}, None for a step that wrote
    nothing; "adversarial" is measured only when ``adversarial``).
    Raises CheckpointError, DataError or ValueError before writing anything when the folder, the data or the
    options are wrong."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{folder} is not a checkpoint folder (no {CONFIG_NAME})")
    model = for_serving(load_pretrained(folder))  # float32, in the layout the app serves and times
    config = model.config
    image_set = load_images(data, config["image_size"], cache_dir)
    if image_set.class_names != config["class_names"]:
        raise DataError(f"{data} has classes {image_set.class_names}, the checkpoint {config['class_names']}")
    cam_x = None if skip_cam else selection_images(config, image_set, cam_skip, cam_images)
    done = {}

    print("1/7 evaluation on the validation split, float32")
    scores = measure(model, EvalConfig(checkpoint=str(folder), data=data, cache_dir=cache_dir), image_set)
    record_accuracy(folder, scores["accuracy"], scores["accuracy_tta"],
                    f"python -m tools.finish_checkpoint, float32 on {next(model.parameters()).device.type}")
    done.update(accuracy=scores["accuracy"], accuracy_tta=scores["accuracy_tta"])
    print(f"    accuracy {scores['accuracy']:.2%}, with test-time augmentation {scores['accuracy_tta']:.2%}; "
          f"{scores['confusion_png']}")

    log = folder / LOG_NAME
    done["curves"] = None
    if log.is_file():
        history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        if history:
            plot_curves(history, folder / "curves.png",
                        title=f"{config.get('display_name', config['arch'])} on {image_set.source}")
            done["curves"] = str(folder / "curves.png")
    print(f"2/7 curves: {done['curves'] or f'no {LOG_NAME}, none drawn'}")

    entry = ood_entry(model, image_set, file_sha256(folder / WEIGHTS_NAME))
    update_config(folder, {"ood": entry})
    done["ood"] = entry
    print(f"3/7 {describe(config['arch'], entry)}")

    done["cam"] = None
    if cam_x is None:
        print("4/7 CAM choice skipped (--skip-cam)")
    else:
        print(f"4/7 CAM choice on {len(cam_x)} validation images (after the first {cam_skip} of the tests' shuffle)")
        settings, best = select(model, cam_x, cam_methods, cam_sanity_images, cam_max_ms)
        print_table(settings)
        if best is None:
            update_config(folder, remove=("cam",))
            print("    no setting passes the sanity check within the time limit: no \"cam\" recorded",
                  file=sys.stderr)
        else:
            done["cam"] = cam_entry(best, len(cam_x), chosen_by or f"tools.finish_checkpoint.finish({str(folder)!r})")
            update_config(folder, {"cam": done["cam"]})
            print(f"    recommended: ({best.method!r}, {best.layer!r}), faithful on {best.shares['faithful']:.0%}")

    done["se_profiles"] = None
    if has_se(model):
        path, _ = write_se_profiles(model, image_set, folder)
        done["se_profiles"] = str(path)
    print(f"5/7 SE profiles: {done['se_profiles'] or 'none (no squeeze-and-excitation blocks)'}")

    done["probes"] = write_probes(model, image_set, folder, probe_images,
                                  chosen_by or f"tools.finish_checkpoint.finish({str(folder)!r})")
    print(f"6/7 {summary(config['arch'], done['probes'])}")
    print("7/7 corruption robustness and calibration")
    # The tool's defaults, fewer on a validation split too small for them (a test's tiny data set).
    n_val = len(checkpoint_split(config, image_set)[1])
    n_corrupt, n_calibrate = min(200, n_val), min(2000, n_val)
    done["robustness"] = measure_robustness(
        folder, data, cache_dir, n_corrupt, n_calibrate, image_set=image_set,
        command=(f"python -m tools.robustness {folder} --data {data} --images {n_corrupt} "
                 f"--calibration-images {n_calibrate}"))
    print(f"    {robustness_summary(config['arch'], done['robustness'])}")
    done["adversarial"] = None
    if adversarial:
        print("8: robustness to adversarial attacks (--adversarial)")
        settings = AdversarialSettings(images=min(AdversarialSettings.images, n_val))
        done["adversarial"] = measure_adversarial(
            folder, image_set, settings, resume=True,
            command=f"python -m tools.adversarial {folder} --data {data} --images {settings.images}")
        print(f"    {adversarial_summary(config['arch'], done['adversarial'])}")
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.finish_checkpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="local checkpoint folder (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="the data it was trained on: ImageFolder dir, .tar, .tar.gz")
    parser.add_argument("--cache-dir", default="data/cache", help="decoded-image cache of train.data")
    parser.add_argument("--skip-cam", action="store_true", help="leave the CAM choice (the slow step) out")
    parser.add_argument("--cam-methods", default=",".join(METHODS), help="comma-separated CAM methods to try")
    parser.add_argument("--cam-images", type=int, default=200, help="validation images for the deletion check")
    parser.add_argument("--cam-skip", type=int, default=100, help="images of the shuffle left to the tests")
    parser.add_argument("--cam-sanity-images", type=int, default=20, help="images for the sanity check and timing")
    parser.add_argument("--probe-images", type=int, default=TRAIN_IMAGES, help="training images the probes fit on")
    parser.add_argument("--cam-max-ms", type=float, default=DEFAULT_MAX_MS,
                        help="time limit per image for a map and its random-weights twin")
    parser.add_argument("--adversarial", action="store_true",
                        help="also measure robustness to adversarial attacks (tools.adversarial; hours on a CPU)")
    args = parser.parse_args(argv)
    methods = parse_methods(parser, args.cam_methods)
    if args.probe_images < 1:
        parser.error("--probe-images must be positive")
    if args.cam_images < 1 or args.cam_sanity_images < 1 or args.cam_skip < 0:
        parser.error("--cam-images and --cam-sanity-images must be positive, --cam-skip not negative")
    chosen_by = shlex.join(["python", "-m", "tools.finish_checkpoint", *(sys.argv[1:] if argv is None else argv)])
    try:
        done = finish(args.checkpoint, args.data, args.cache_dir, args.skip_cam, methods, args.cam_images,
                      args.cam_skip, args.cam_sanity_images, args.cam_max_ms, chosen_by, args.probe_images,
                      args.adversarial)
    except (CheckpointError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 1 if done["cam"] is None and not args.skip_cam else 0


if __name__ == "__main__":
    sys.exit(main())
