"""Tests of tools/: the commands that finish a checkpoint folder, on random weights and the tests' tiny data."""
from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

import explain
from architectures import create_model, load_pretrained, save_pretrained
from architectures.checkpoint import WEIGHTS_NAME, file_sha256
from conftest import random_checkpoint
from robustness.corruptions import CORRUPTIONS, SEVERITIES
from robustness.report import BARS_NAME, RELIABILITY_NAME, load_result
from tools import calibrate_ood, finish_checkpoint
from train.data import split_train_val

TINY_CLASSES = ["blue", "green", "red"]  # tiny_folder's classes, in ImageFolder's sorted order
FAST_CAM = ["--cam-methods", "gradcam,occlusion", "--cam-skip", "2", "--cam-images", "8", "--cam-sanity-images", "2",
            "--cam-max-ms", "100000"]  # timing is not what these tests check


# Narrow versions of the architectures the tools run on: the tools read the settings from config.json ("arch_args")
# like any checkpoint's, and the tests check what they write, not what the model learned, at a fiftieth of the work.
SMALL = {"senet": {"blocks_per_stage": 1, "width": 8}, "bn_convnet": {"widths": (8, 16, 32)}, "nin": {}}


def tiny_checkpoint(folder, arch: str):
    """A random-weight 3-class checkpoint of a small ``arch`` (SMALL) for tiny_folder, with a two-epoch log.jsonl."""
    torch.manual_seed(0)
    out = save_pretrained(create_model(arch, num_classes=3, **SMALL[arch]), folder / arch, {
        "display_name": arch, "class_names": TINY_CLASSES, "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
        "val_accuracy": 0.5, "epochs": 2, "train_seconds": 1.0, "hardware": "none (random weights)",
        "val_accuracy_flip_tta": 0.5})
    log = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.3 * e, "val_loss": 1.1 / e, "val_accuracy": 0.3 * e}
           for e in (1, 2)]
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return out


def decodable_png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def test_finish_checkpoint_writes_every_artefact_into_the_folder(tmp_path, tiny_folder):
    folder = tiny_checkpoint(tmp_path, "senet")  # an SE model: all five steps write something
    before = json.loads((folder / "config.json").read_text())
    code = finish_checkpoint.main([str(folder), "--data", str(tiny_folder), "--cache-dir", str(tmp_path / "cache"),
                                   *FAST_CAM])
    config = json.loads((folder / "config.json").read_text())
    model = load_pretrained(folder)
    _, val_idx = split_train_val(torch.tensor([c for c in range(3) for _ in range(40)]), 0.1, 0)

    # 1. the float32 evaluation, every other key as it was (the flip-only figure of old versions dropped; step 7
    # adds "temperature" where scaling helps)
    new = {"val_accuracy", "val_accuracy_tta", "val_accuracy_measured_by", "ood", "cam", "temperature"}
    assert {k: v for k, v in config.items() if k not in new} == {
        k: v for k, v in before.items() if k not in new | {"val_accuracy_flip_tta"}}
    for key in ("val_accuracy", "val_accuracy_tta"):
        assert isinstance(config[key], float) and 0 <= config[key] <= 1
        assert config[key] * len(val_idx) == pytest.approx(round(config[key] * len(val_idx)), abs=1e-2)
    assert config["val_accuracy_measured_by"].startswith("python -m tools.finish_checkpoint, float32")
    assert min(decodable_png(folder / "confusion.png")) > 100
    # 2. the curves, drawn from log.jsonl (there were none)
    assert min(decodable_png(folder / "curves.png")) > 100
    # 3. the OOD threshold of these weights, inside its score's range
    ood = config["ood"]
    assert ood["score"] in ("max_prob", "entropy") and ood["val_images"] == len(val_idx)
    upper = 1.0 if ood["score"] == "max_prob" else math.log(3)
    assert 0 <= ood["threshold"] <= upper + 1e-6
    assert ood["weights_sha256"] == file_sha256(folder / WEIGHTS_NAME)
    assert set(ood["candidates"]) == {"max_prob", "entropy"}
    # 4. the CAM setting, one the model can run, with its figures and the command that chose it
    cam = config["cam"]
    assert code == 0
    assert cam["method"] in ("gradcam", "occlusion")
    if cam["method"] in explain.LAYER_FREE:
        assert cam["layer"] is None
    else:
        assert cam["layer"] in model.cam_layers
    assert explain.recommended_cam(config) == (cam["method"], cam["layer"])
    assert cam["images"] == 8 and cam["spearman"] < 0.5
    outcomes = cam["outcomes"]
    assert outcomes["faithful"] == pytest.approx(outcomes["explains"] + outcomes["centre"], abs=1e-3)
    assert sum(outcomes[key] for key in ("explains", "centre", "not explained", "inconclusive")) == pytest.approx(1)
    assert set(cam["scores"]) == {"map", "centre", "random", "random_weights"}
    assert cam["chosen_by"].startswith("python -m tools.finish_checkpoint ") and "--cam-images 8" in cam["chosen_by"]
    # 5. SE profiles over the validation split
    profiles = explain.load_se_profiles(folder)
    assert profiles["class_names"] == TINY_CLASSES and sum(profiles["counts"]) == len(val_idx)
    assert profiles["blocks"] == [name for name, _ in explain.se_excitations(model, torch.zeros(1, 3, 32, 32))]
    # 6. a linear probe per stage
    assert (folder / "probes.json").is_file() and (folder / "probes.safetensors").is_file()
    # 7. robustness.json of these weights with its plots, and config.json's temperature exactly when it is adopted
    stored = load_result(folder, file_sha256(folder / WEIGHTS_NAME))
    assert stored is not None and set(stored["accuracy"]) == set(CORRUPTIONS)
    assert all(len(accuracies) == len(SEVERITIES) for accuracies in stored["accuracy"].values())
    assert min(decodable_png(folder / BARS_NAME)) > 100 and min(decodable_png(folder / RELIABILITY_NAME)) > 100
    calibration = stored["calibration"]
    assert ("temperature" in config) == calibration["temperature_adopted"]
    if calibration["temperature_adopted"]:
        assert config["temperature"]["value"] == calibration["temperature"] == ood["temperature"]


def test_finish_checkpoint_refuses_bad_input_and_writes_nothing(tmp_path, tiny_folder, capsys):
    folder = random_checkpoint(tmp_path, "bn_convnet")  # the ten CIFAR-10 classes, not tiny_folder's three
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    args = ["--data", str(tiny_folder), "--cache-dir", str(tmp_path / "cache"), *FAST_CAM]
    assert finish_checkpoint.main([str(folder), *args]) == 2
    assert "error:" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files  # config.json byte-identical, no PNG
    assert finish_checkpoint.main([str(tmp_path / "nothing"), *args]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    tiny = tiny_checkpoint(tmp_path, "nin")
    config = (tiny / "config.json").read_bytes()
    too_many = ["--data", str(tiny_folder), "--cache-dir", str(tmp_path / "cache"), "--cam-images", "1000"]
    assert finish_checkpoint.main([str(tiny), *too_many]) == 2  # more images than the validation split
    assert (tiny / "config.json").read_bytes() == config and not (tiny / "confusion.png").exists()
    with pytest.raises(SystemExit):
        finish_checkpoint.main([str(tiny), "--data", str(tiny_folder), "--cam-methods", "gradcam,nosuchcam"])


def test_calibrate_ood_writes_each_checkpoints_threshold_into_its_config(tmp_path, tiny_folder, capsys):
    folder = tiny_checkpoint(tmp_path, "bn_convnet")
    before = json.loads((folder / "config.json").read_text())
    assert calibrate_ood.main(["--data", str(tiny_folder), "--checkpoints", str(tmp_path), "--arch", "all",
                               "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "skip resnet" in out and "bn_convnet: " in out  # only bn_convnet has a folder here
    config = json.loads((folder / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != "ood"} == before
    assert config["ood"]["weights_sha256"] == file_sha256(folder / WEIGHTS_NAME)
    assert config["ood"]["score"] in ("max_prob", "entropy") and "date" not in config["ood"]
