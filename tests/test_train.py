"""The training pipeline end to end on data the tests make: learning, resuming, DDP, evaluation, errors."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, make_image_folder
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from architectures import create_model, load_pretrained
from train import budget as budget_trial
from train.augment import (
    normalize,
    random_cutmix,
    random_cutout,
    random_flip,
    random_translate,
    served_probs,
    translated,
)
from train.config import TrainConfig, parse_config
from train.data import DataError, load_images, split_train_val
from train.distill import Teacher, mixed_targets
from train.state import STATE_NAME
from train.trainer import Trainee, kept_weights, lr_factor, train

FAST = dict(epochs=2, batch_size=16, lr=0.05, warmup_epochs=0.5, progress=False, threads=1)


def tiny_config(tmp_path: Path, data: Path, **overrides) -> TrainConfig:
    options = {**FAST, "arch": "bn_convnet", "data": str(data), "out": str(tmp_path / "out"),
               "run_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"), **overrides}
    return TrainConfig(**options)


def test_two_epochs_beat_chance_and_export_a_checkpoint(tmp_path, tiny_folder):
    result = train(tiny_config(tmp_path, tiny_folder))
    assert result["val_accuracy"] > 0.6  # three classes: chance is 0.33
    model = load_pretrained(tmp_path / "out")
    assert model.config["class_names"] == ["blue", "green", "red"]  # from the data, sorted like ImageFolder
    for name in ("log.jsonl", "curves.png", "config.json"):
        assert (tmp_path / "out" / name).is_file()
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, tiny_folder):
    straight = train(tiny_config(tmp_path / "a", tiny_folder, epochs=3))
    paused = train(tiny_config(tmp_path / "b", tiny_folder, epochs=3, max_epochs_this_run=1))
    assert paused["paused_at_epoch"] == 1
    resumed = train(tiny_config(tmp_path / "b", tiny_folder, epochs=3, resume=True))
    assert resumed["val_accuracy"] == straight["val_accuracy"]
    a = load_file(tmp_path / "a" / "out" / "model.safetensors")
    b = load_file(tmp_path / "b" / "out" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_resume_refuses_changed_settings(tmp_path, tiny_folder):
    train(tiny_config(tmp_path, tiny_folder, epochs=2, max_epochs_this_run=1))
    with pytest.raises(ValueError, match="lr"):
        train(tiny_config(tmp_path, tiny_folder, epochs=2, lr=0.01, resume=True))


def test_diverging_loss_stops_with_the_step(tmp_path, tiny_folder):
    with pytest.raises(FloatingPointError, match="step"):
        train(tiny_config(tmp_path, tiny_folder, arch="basic_convnet", lr=1e12, warmup_epochs=0.01))


def test_empty_and_classless_data_give_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_images(str(tmp_path / "empty"), cache_dir=tmp_path / "cache")
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(DataError, match="at least two classes"):
        load_images(str(tmp_path / "one"), cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="does not exist"):
        load_images(str(tmp_path / "missing"), cache_dir=tmp_path / "cache")


def test_tar_gz_gives_the_same_images_as_the_folder(tmp_path, tiny_folder):
    import tarfile

    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tiny_folder, arcname="train")
    from_folder = load_images(str(tiny_folder), cache_dir=tmp_path / "c1")
    from_tar = load_images(str(archive), cache_dir=tmp_path / "c2")
    assert from_tar.class_names == from_folder.class_names
    assert torch.equal(from_tar.images, from_folder.images) and torch.equal(from_tar.labels, from_folder.labels)
    cached = load_images(str(archive), cache_dir=tmp_path / "c2")  # second load comes from the cache
    assert torch.equal(cached.images, from_tar.images)


def test_validation_split_is_fixed_per_class_and_disjoint():
    labels = torch.arange(10).repeat_interleave(5000)
    train_idx, val_idx = split_train_val(labels, 0.1, 0)
    assert len(val_idx) == 5000 and torch.equal(labels[val_idx].bincount(), torch.full((10,), 500))
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert len(train_idx) + len(val_idx) == len(labels)
    assert torch.equal(split_train_val(labels, 0.1, 0)[1], val_idx)
    assert not torch.equal(split_train_val(labels, 0.1, 1)[1], val_idx)


def test_config_rejects_unknown_and_malformed_options(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--arch", "resnet", "--learning-rate", "0.1"])
    with pytest.raises(SystemExit):
        parse_config(["--epochs", "many"])
    with pytest.raises(SystemExit):
        parse_config(["--bf16", "maybe"])
    config = parse_config(["--arch", "vgg", "--epochs", "3", "--no-bf16", "--resume"])
    assert (config.arch, config.epochs, config.bf16, config.resume) == ("vgg", 3, False, True)


def test_help_text_keeps_comments_wrapped_onto_more_lines():
    from train.config import field_comments

    @dataclasses.dataclass
    class Wrapped:
        first: int = 0      # begins here;
                            # goes on here
        # a comment of its own, not under the field's: not help text
        second: str = ""    # one line
    #                         under no field's comment

    assert field_comments(Wrapped) == {"first": "begins here; goes on here", "second": "one line"}
    comments = field_comments(TrainConfig)
    assert comments["swa_lr"].endswith("(with --swa-epochs); 0 = a fifth of --lr")
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= set(comments)  # every flag has its help


def test_cli_unknown_architecture_lists_the_names(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train", "--arch", "lenet", "--data", str(tmp_path)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown architecture 'lenet'" in result.stderr and "mlpmixer" in result.stderr


def test_schedule_warms_up_then_decays_to_zero():
    factors = [lr_factor(step, 100, 10) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:])) and factors[-1] == pytest.approx(1 / 90)


def test_schedule_with_swa_decays_to_the_held_rate_of_the_averaged_epochs():
    factors = [lr_factor(step, 100, 10, hold_steps=30, hold_factor=0.2) for step in range(100)]
    assert factors[9] == pytest.approx(1.0) and factors[69] == pytest.approx(0.2 + 0.8 / 60)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert factors[70:] == [0.2] * 30


def test_swa_checkpoint_is_the_mean_of_the_last_epochs_with_batchnorm_statistics_of_its_own(tmp_path, tiny_folder):
    options = dict(epochs=4, swa_epochs=2, lr=0.1)
    straight = train(tiny_config(tmp_path / "a", tiny_folder, **options))
    # The same run in four parts, keeping the weights of epochs 3 and 4 from its saved state.
    state, epoch_weights = tmp_path / "b" / "run" / STATE_NAME, []
    for part in range(4):
        result = train(tiny_config(tmp_path / "b", tiny_folder, **options, resume=part > 0, max_epochs_this_run=1))
        epoch_weights.append({k[6:]: v for k, v in load_file(state).items() if k.startswith("model.")})
    assert result["val_accuracy"] == straight["val_accuracy"]  # a resumed run keeps its average
    assert result["recipe"]["swa_epochs"] == 2 and result["recipe"]["swa_lr"] == pytest.approx(0.02)
    assert "--swa-epochs 2 --swa-lr 0.02" in result["command"] and result["val_accuracy"] > 0.6
    stored = load_file(tmp_path / "b" / "out" / "model.safetensors")
    last = epoch_weights[3]
    for key, value in stored.items():
        if "running" in key:  # recomputed for the averaged weights: neither epoch's statistics
            assert not torch.allclose(value, last[key])
        elif value.is_floating_point() and "num_batches" not in key:
            mean = (epoch_weights[2][key] + last[key]) / 2
            torch.testing.assert_close(value.float(), mean.to(value.dtype).float())
    log = [json.loads(line) for line in (tmp_path / "b" / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["averaged_epochs"] for r in log] == [0, 0, 1, 2]
    assert log[0]["lr"] > 0.02 and log[2]["lr"] == log[3]["lr"] == pytest.approx(0.02)


def test_the_checkpoint_keeps_the_weight_average_once_there_is_one():
    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    swa = torch.optim.swa_utils.AveragedModel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def trainee(average):
        return Trainee(model, average, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
                       lambda _: 1.0)

    assert kept_weights(trainee(None)) is model
    assert kept_weights(trainee(ema)) is ema
    assert kept_weights(trainee(swa)) is model  # SWA has averaged no epoch yet
    swa.update_parameters(model)
    assert kept_weights(trainee(swa)) is swa.module


@pytest.mark.parametrize("options, message", [
    (dict(swa_epochs=2, epochs=2), "no room for the warm-up"), (dict(swa_epochs=1, ema_decay=0.9), "choose one"),
    (dict(swa_lr=0.01), "give --swa-epochs"), (dict(swa_epochs=-1), "must not be negative"),
])
def test_bad_swa_settings_fail_before_any_data_is_read(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        train(tiny_config(tmp_path, tmp_path / "no-such-data", **options))


def test_augmentations_keep_shape_and_content():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    generator = torch.Generator().manual_seed(0)
    moved = random_translate(images, 2, generator)
    assert moved.shape == images.shape and moved.dtype == torch.uint8
    flipped = random_flip(images, torch.Generator().manual_seed(3))
    for original, result in zip(images, flipped):
        assert torch.equal(result, original) or torch.equal(result, original.flip(2))
    blanked = random_cutout(images.float() + 1, 3, generator)
    assert ((blanked == 0).flatten(1).sum(1) > 0).all()


def test_cutmix_pastes_one_box_from_each_partner_and_says_how_much():
    # Image i is filled with the value i, so every pixel tells whose it is.
    images = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 16, 16).contiguous()
    labels = torch.arange(8) * 10
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert random_cutmix(images, labels, 0.0, generator) == (images, labels, 1.0)
    assert torch.equal(generator.get_state(), state)  # off: nothing drawn, other recipes' streams unchanged
    mixed, partner, own = random_cutmix(images, labels, 1.0, generator)
    assert mixed.shape == images.shape and torch.equal(images[:, 0, 0, 0], torch.arange(8.0))  # input untouched
    for i in range(8):
        pasted = mixed[i] != i
        if partner[i] != labels[i]:  # paired with another image: the box holds that image's pixels, as reported
            assert (mixed[i][pasted] == partner[i] / 10).all()
            assert pasted.float().mean().item() == pytest.approx(1 - own)
        else:
            assert not pasted.any()
    assert 0 < own < 1 and sorted(partner.tolist()) == labels.tolist()  # a pairing: everyone is a partner once


def test_cutmix_run_trains_and_records_it(tmp_path, tiny_folder):
    result = train(tiny_config(tmp_path, tiny_folder, cutmix=1.0))
    assert result["val_accuracy"] > 0.5  # three classes: chance is 0.33
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["recipe"]["cutmix"] == 1.0 and "--cutmix 1.0" in config["command"]


def test_init_from_continues_a_checkpoint_and_records_both_stages(tmp_path, tiny_folder):
    train(tiny_config(tmp_path / "a", tiny_folder, arch="basic_convnet", epochs=2))
    parent = tmp_path / "a" / "out"
    # lr 0: the further stage must leave the parent's weights exactly as loaded.
    result = train(tiny_config(tmp_path / "b", tiny_folder, arch="basic_convnet", epochs=1, lr=0.0,
                               init_from=str(parent)))
    before, after = load_file(parent / "model.safetensors"), load_file(tmp_path / "b" / "out" / "model.safetensors")
    for key in before:
        torch.testing.assert_close(after[key], before[key])
    parent_config = json.loads((parent / "config.json").read_text())
    assert result["val_accuracy"] == parent_config["val_accuracy"]
    assert result["epochs"] == 3 and [s["epochs"] for s in result["stages"]] == [2, 1]
    assert result["command"] == parent_config["command"] + " && " + result["stages"][1]["command"]
    assert f"--init-from {parent}" in result["command"] and result["recipe"]["init_from"] == str(parent)
    log = [json.loads(line) for line in (tmp_path / "b" / "out" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and log[-1]["stage"] == 2


def test_init_from_refuses_a_parent_with_another_split_or_architecture(tmp_path, tiny_folder):
    train(tiny_config(tmp_path / "a", tiny_folder, arch="basic_convnet", epochs=1))
    parent = str(tmp_path / "a" / "out")
    with pytest.raises(ValueError, match="split_seed 0 \\(this run: 1\\)"):
        train(tiny_config(tmp_path / "b", tiny_folder, arch="basic_convnet", init_from=parent, split_seed=1))
    with pytest.raises(ValueError, match="arch 'basic_convnet'"):
        train(tiny_config(tmp_path / "c", tiny_folder, arch="bn_convnet", init_from=parent))
    with pytest.raises(ValueError, match="--init-from"):
        train(tiny_config(tmp_path / "d", tiny_folder, arch="basic_convnet", init_from=str(tmp_path / "none")))


def test_arch_args_build_another_width_that_the_checkpoint_and_command_carry(tmp_path, tiny_folder):
    narrow = '{"widths": [8, 16, 32]}'
    result = train(tiny_config(tmp_path / "a", tiny_folder, arch="basic_convnet", epochs=1, arch_args=narrow))
    model = load_pretrained(tmp_path / "a" / "out")
    assert model.arch_args["widths"] == [8, 16, 32] == model.config["arch_args"]["widths"]
    assert model.config["params"] < sum(p.numel() for p in create_model("basic_convnet").parameters()) / 10
    # The command names the settings once, quoted for the shell, and parses back to the same run.
    assert "--arch-args '{\"widths\":[8,16,32]}'" in result["command"]
    argv = shlex.split(result["command"])[3:]
    assert json.loads(parse_config(argv).arch_args) == {"widths": [8, 16, 32]}
    # A resumed run must not change them; a further stage keeps its parent's and refuses others.
    train(tiny_config(tmp_path / "b", tiny_folder, arch="basic_convnet", epochs=2, arch_args=narrow,
                      max_epochs_this_run=1))
    with pytest.raises(ValueError, match="arch_args"):
        train(tiny_config(tmp_path / "b", tiny_folder, arch="basic_convnet", epochs=2, resume=True,
                          arch_args='{"widths": [8, 16, 64]}'))
    parent = str(tmp_path / "a" / "out")
    with pytest.raises(ValueError, match="keeps its parent's architecture"):
        train(tiny_config(tmp_path / "c", tiny_folder, arch="basic_convnet", init_from=parent,
                          arch_args='{"widths": [8, 16, 64]}'))
    train(tiny_config(tmp_path / "d", tiny_folder, arch="basic_convnet", epochs=1, init_from=parent))
    assert load_pretrained(tmp_path / "d" / "out").arch_args["widths"] == [8, 16, 32]


def test_a_state_saved_before_a_setting_existed_resumes_with_its_default(tmp_path, tiny_folder):
    """Runs paused by older code have no arch_args or cpu_bf16 in their fingerprint: they ran with the default
    (the recipe's, for cpu_bf16)."""
    straight = train(tiny_config(tmp_path / "a", tiny_folder, epochs=2))
    train(tiny_config(tmp_path / "b", tiny_folder, epochs=2, max_epochs_this_run=1))
    state = tmp_path / "b" / "run" / STATE_NAME
    with safe_open(state, framework="pt") as handle:
        metadata = handle.metadata()
    info = json.loads(metadata["info"])
    del info["fingerprint"]["arch_args"], info["fingerprint"]["cpu_bf16"]
    save_file(load_file(state), state, metadata={**metadata, "info": json.dumps(info)})
    resumed = train(tiny_config(tmp_path / "b", tiny_folder, epochs=2, resume=True))
    assert resumed["val_accuracy"] == straight["val_accuracy"]


@pytest.mark.parametrize("bad, message", [
    ('{"widths": [8, 16', "Expecting"), ('[8, 16, 32]', "must be an object"), ('{"width": 8}', "takes no argument"),
    ('{"widths": [0, 16, 32]}', "--arch-args"), ('{"widths": [8, 16, 100000]}', "outside sane sizes"),
    ('{"dropout": "x"}', "--arch-args"),
])
def test_bad_arch_args_fail_before_any_data_is_read(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        train(tiny_config(tmp_path, tmp_path / "no-such-data", arch="basic_convnet", arch_args=bad))


def test_a_model_built_for_one_image_size_is_refused_at_another_before_data_is_read(tmp_path, tiny_folder):
    with pytest.raises(ValueError, match="built for 32-pixel images"):
        train(tiny_config(tmp_path, tmp_path / "no-such-data", arch="mlpmixer", image_size=16))
    # Asked for, it trains; a further stage inherits it without asking again.
    small = '{"image_size": 16, "patch_size": 4, "dim": 16, "token_hidden": 8, "channel_hidden": 32, "depth": 1}'
    train(tiny_config(tmp_path / "a", tiny_folder, arch="mlpmixer", image_size=16, epochs=1, arch_args=small))
    train(tiny_config(tmp_path / "b", tiny_folder, arch="mlpmixer", image_size=16, epochs=1,
                      init_from=str(tmp_path / "a" / "out")))
    assert load_pretrained(tmp_path / "b" / "out").arch_args["image_size"] == 16


def test_cli_refuses_arch_args_for_the_whole_zoo(tmp_path):
    result = subprocess.run([sys.executable, "-m", "train", "--arch", "all", "--data", str(tmp_path),
                             "--arch-args", '{"width": 48}'], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "name it with --arch" in result.stderr


def test_evaluate_writes_accuracy_and_confusion_matrix(tmp_path, tiny_folder):
    train(tiny_config(tmp_path, tiny_folder))
    result = subprocess.run([sys.executable, "-m", "train.evaluate", "--checkpoint", str(tmp_path / "out"),
                             "--data", str(tiny_folder), "--cache-dir", str(tmp_path / "cache"),
                             "--json-out", str(tmp_path / "eval.json")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert report["images"] == 12 and report["accuracy"] == pytest.approx(config["val_accuracy"], abs=1e-4)
    assert report["accuracy_tta"] == pytest.approx(config["val_accuracy_tta"], abs=1e-4)
    assert (tmp_path / "out" / "confusion.png").is_file()
    # --record sets both figures from this evaluation: here into a checkpoint trained before training
    # recorded the TTA figure, whose val_accuracy is off (as a bf16 run's last epoch may be) and which has an
    # earlier version's flip-only figure, which --record drops.
    del config["val_accuracy_tta"]
    config["val_accuracy"] = 0.0
    (tmp_path / "out" / "config.json").write_text(json.dumps({**config, "val_accuracy_flip_tta": 0.5}))
    result = subprocess.run([sys.executable, "-m", "train.evaluate", "--checkpoint", str(tmp_path / "out"),
                             "--data", str(tiny_folder), "--cache-dir", str(tmp_path / "cache"), "--record"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    recorded = json.loads((tmp_path / "out" / "config.json").read_text())
    assert recorded == {**config, "val_accuracy": round(report["accuracy"], 4),
                        "val_accuracy_tta": round(report["accuracy_tta"], 4),
                        "val_accuracy_measured_by": "python -m train.evaluate, float32 on cpu"}


def test_training_stores_float16_and_compact_converts_a_float32_checkpoint(tmp_path, tiny_folder):
    train(tiny_config(tmp_path / "half", tiny_folder))
    assert load_file(tmp_path / "half" / "out" / "model.safetensors")["head.fc.weight"].dtype == torch.float16
    out = tmp_path / "out"
    train(tiny_config(tmp_path, tiny_folder, weights_dtype="float32"))
    assert "--weights-dtype float32" in json.loads((out / "config.json").read_text())["command"]
    before = (out / "model.safetensors").stat().st_size
    compact = [sys.executable, "-m", "tools.compact_checkpoint", "--checkpoint", str(out), "--data", str(tiny_folder),
               "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(compact, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["weights_dtype"] == "float16" and "weights stored in float16" in config["val_accuracy_measured_by"]
    weights = (out / "model.safetensors").read_bytes()
    assert len(weights) < 0.6 * before
    # The recorded figures are those of the stored weights, as train.evaluate measures them.
    result = subprocess.run([sys.executable, "-m", "train.evaluate", "--checkpoint", str(out), "--data",
                             str(tiny_folder), "--cache-dir", str(tmp_path / "cache"), "--json-out",
                             str(tmp_path / "eval.json")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval.json").read_text())
    assert (config["val_accuracy"], config["val_accuracy_tta"]) == (round(report["accuracy"], 4),
                                                                    round(report["accuracy_tta"], 4))
    again = subprocess.run(compact, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already stored in float16" in again.stdout
    assert (out / "model.safetensors").read_bytes() == weights
    wrong = subprocess.run(compact + ["--weights-dtype", "int8"], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=300)
    assert wrong.returncode == 2 and "weights_dtype must be one of" in wrong.stderr


def test_translated_moves_the_image_and_reflects_the_uncovered_edge():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    down_right = translated(x, 1, 1)[0, 0]
    torch.testing.assert_close(down_right[1:, 1:], x[0, 0, :3, :3])
    torch.testing.assert_close(down_right[0, 1:], x[0, 0, 1, :3])  # row -1 reflects row 1
    torch.testing.assert_close(translated(x, -1, -1)[0, 0, :3, :3], x[0, 0, 1:, 1:])
    assert translated(x, 0, 0) is x


def test_served_probs_weigh_the_moved_and_mirrored_views():
    model = create_model("bn_convnet").eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        def pair(view):
            return (model(view).softmax(-1) + model(view.flip(3)).softmax(-1)) / 2
        expected = 0.5 * pair(x) + 0.25 * pair(translated(x, -1, -1)) + 0.25 * pair(translated(x, 1, 1))
        torch.testing.assert_close(served_probs(model, x), expected)
        assert not torch.allclose(served_probs(model, x), pair(x), atol=1e-4)  # the shifts count
        constant = torch.full((2, 3, 32, 32), 0.3)  # its own mirror image and its own shifts
        torch.testing.assert_close(served_probs(model, constant), model(constant).softmax(-1))


def test_two_process_ddp_on_cpu(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=24)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "train", "--arch", "resnet", "--data", str(data), "--epochs", "1", "--batch-size", "16",
               "--device", "cpu", "--no-progress", "--threads", "1", "--out", str(tmp_path / "out"),
               "--run-dir", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "2 processes" in config["hardware"]
    load_pretrained(tmp_path / "out")


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = make_image_folder(tmp_path / "images", per_class=150)
    straight = train(tiny_config(tmp_path / "a", data, epochs=3))
    run_dir, out = tmp_path / "b" / "run", tmp_path / "b" / "out"
    command = [sys.executable, "-m", "train", "--arch", "bn_convnet", "--data", str(data), "--epochs", "3",
               "--batch-size", "16", "--lr", "0.05", "--warmup-epochs", "0.5", "--no-progress", "--threads", "1",
               "--out", str(out), "--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "b" / "cache")]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = run_dir / "train_state.safetensors"
    try:
        deadline = time.monotonic() + 240
        while not state.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # into the second epoch
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "config.json").exists()
    resumed = train(tiny_config(tmp_path / "b", data, epochs=3, resume=True))
    assert resumed["val_accuracy"] == straight["val_accuracy"]
    a, b = load_file(tmp_path / "a" / "out" / "model.safetensors"), load_file(out / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_push_to_hub_uploads_weights_config_and_model_card(tmp_path, tiny_folder, monkeypatch):
    import huggingface_hub

    from train.hub import push_to_hub

    train(tiny_config(tmp_path, tiny_folder, epochs=1))
    calls = {}

    class RecordingApi:  # stands in for the Hub: the test must not reach the network
        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls["repo"] = repo_id

        def upload_folder(self, repo_id, folder_path, allow_patterns, revision=None, commit_message=""):
            calls["files"] = sorted(allow_patterns)
            return "commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    push_to_hub(tmp_path / "out", "someone/tiny-zoo")
    assert calls["repo"] == "someone/tiny-zoo"
    assert {"model.safetensors", "config.json", "README.md", "curves.png"} <= set(calls["files"])
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\n") and "bn_convnet" in card and "Validation accuracy" in card


def test_time_budget_picks_the_epochs_and_the_command_reproduces_them(tmp_path, tiny_folder):
    result = train(tiny_config(tmp_path, tiny_folder, epochs=None, time_budget=4, lr=0.07))
    assert result["epochs"] >= 1 and result["recipe"]["epochs"] == result["epochs"]
    command = result["command"]
    assert f"--epochs {result['epochs']}" in command and "--time-budget" not in command
    assert "--lr 0.07" in command and "--batch-size 16" in command  # both differ from the recipe
    assert "--weight-decay" not in command  # left at the recipe's value
    with pytest.raises(ValueError, match="not both"):
        train(tiny_config(tmp_path, tiny_folder, epochs=2, time_budget=4))


def test_time_budget_does_not_count_the_first_validations_one_off_cost_every_epoch(tmp_path, tiny_folder, monkeypatch,
                                                                                  capsys):
    # A slow first validation pass stands in for one-off costs such as cuDNN's algorithm search (seconds on
    # a shared GPU, once): the trial must not charge it to each epoch, or the run stops far inside its budget.
    real_evaluate, calls = budget_trial.evaluate, []

    def evaluate_slow_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.5)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(budget_trial, "evaluate", evaluate_slow_once)
    train(tiny_config(tmp_path, tiny_folder, epochs=None, time_budget=4))
    after_epoch = re.search(r"([0-9.]+) s per epoch to validate and save", capsys.readouterr().out)
    assert after_epoch and float(after_epoch.group(1)) < 1.0, after_epoch


def test_time_budget_charges_each_epoch_the_batchnorm_pass_of_weight_averaging(tmp_path, tiny_folder, monkeypatch,
                                                                                capsys):
    real_recompute, calls = budget_trial.recompute_batchnorm, []

    def recompute_slow_once(*args, **kwargs):  # the trial's pass is the first
        calls.append(kwargs.get("limit"))
        if len(calls) == 1:
            time.sleep(1.0)
        return real_recompute(*args, **kwargs)

    monkeypatch.setattr(budget_trial, "recompute_batchnorm", recompute_slow_once)
    train(tiny_config(tmp_path, tiny_folder, epochs=None, time_budget=20, swa_epochs=1, max_epochs_this_run=1))
    after_epoch = re.search(r"([0-9.]+) s per epoch to validate and save", capsys.readouterr().out)
    assert after_epoch and float(after_epoch.group(1)) >= 1.0, after_epoch
    assert calls[0] == budget_trial.SWA_EPOCH_BATCHNORM_IMAGES


def test_time_budget_charges_the_last_batchnorm_pass_over_every_image_once(tmp_path, tiny_folder, monkeypatch,
                                                                            capsys):
    """The trial's pass covers SWA_EPOCH_BATCHNORM_IMAGES; the last epoch's covers every training image, and the
    excess is taken from the budget once: here a 2 s pass over 10 images stands for about 20 s more over the
    tiny set's 100-odd training images (120 less the validation split)."""
    real_recompute = budget_trial.recompute_batchnorm

    def recompute_slow_once(*args, **kwargs):
        if not hasattr(recompute_slow_once, "done"):
            recompute_slow_once.done = True
            time.sleep(2.0)
        return real_recompute(*args, **kwargs)

    monkeypatch.setattr(budget_trial, "recompute_batchnorm", recompute_slow_once)
    monkeypatch.setattr(budget_trial, "SWA_EPOCH_BATCHNORM_IMAGES", 10)
    train(tiny_config(tmp_path, tiny_folder, epochs=None, time_budget=30, swa_epochs=1,
                     warmup_epochs=0, max_epochs_this_run=1))  # no warm-up: one epoch may be all that fits
    out = capsys.readouterr().out
    last_pass = re.search(r"([0-9.]+) s more for the last BatchNorm pass; (\d+) epochs fit", out)
    per_epoch = re.search(r"([0-9.]+) s per epoch to validate and save", out)
    assert last_pass and per_epoch, out
    extra, epochs, epoch_seconds = float(last_pass.group(1)), int(last_pass.group(2)), float(per_epoch.group(1))
    assert extra >= 2.0 * 9  # at least 100 training images
    # The budget's 0.9 safety share less the excess, over epochs of at least the after-epoch time (figures
    # rounded): at most 3 here, against 7 or more were the excess not charged.
    assert epochs <= max(1, int((30 * 0.9 - extra + 0.01) / (epoch_seconds - 0.005)))


def run_parallel(tmp_path, data, archs, budget, *extra, arch_flags=()):
    from train.parallel import main

    return main(["--data", str(data), "--time-budget", str(budget), "--archs", archs,
                 "--out", str(tmp_path / "ck" / "{arch}"), "--run-dir", str(tmp_path / "run" / "{arch}"),
                 "--log-dir", str(tmp_path / "logs"), *(f for flags in arch_flags for f in ("--arch-flags", flags)),
                 "--",
                 "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"), *extra])


def test_parallel_trains_each_architecture_in_its_own_process(tmp_path, tiny_folder):
    # One of them at other widths, as a GPU round of wider nets would ask (quoted as in the README).
    assert run_parallel(tmp_path, tiny_folder, "bn_convnet,nin", 6, "--lr", "0.05",
                        arch_flags=["nin=--arch-args '{\"widths\": [16, 32, 32]}'"]) == 0
    configs = {arch: json.loads((tmp_path / "ck" / arch / "config.json").read_text()) for arch in ("bn_convnet", "nin")}
    for arch, config in configs.items():
        assert config["arch"] == arch and config["epochs"] >= 1
        assert "trial ran" in (log := (tmp_path / "logs" / f"{arch}.log").read_text())
        assert "waiting for the other runs" in log  # timed together (train.env.wait_for_trial_barrier)
    assert configs["nin"]["arch_args"]["widths"] == [16, 32, 32]
    assert configs["bn_convnet"]["arch_args"]["widths"] == [64, 128, 256]  # its default, untouched


def test_parallel_retries_a_diverging_run_then_reports_it(tmp_path, tiny_folder):
    # The retry halves the forced learning rate (after --), which still diverges.
    code = run_parallel(tmp_path, tiny_folder, "basic_convnet", 60, "--lr", "1e12", "--warmup-epochs", "0.01")
    assert code == 1
    log = (tmp_path / "logs" / "basic_convnet.log").read_text()
    commands = [line for line in log.splitlines() if line.startswith("$ ")]
    assert len(commands) == 2 and "not finite" in log
    assert commands[1].endswith("--lr 5e+11")
    assert not (tmp_path / "ck" / "basic_convnet").exists()


def test_parallel_scales_learning_rates_and_adds_flags_for_one_architecture():
    from train.parallel import Run, parse_args, train_command
    from train.recipes import lr_for_batch, recipe_for

    args = parse_args(["--data", "d", "--time-budget", "60", "--batch-size", "512", "--lr-scale", "0.5",
                       "--arch-flags", "mlpmixer=--cutmix 0.5", "--", "--init-from", "checkpoints/{arch}"])
    mixer = train_command(args, Run("mlpmixer", 0.5 * lr_for_batch("mlpmixer", 512), 60), threads=1)
    resnet = train_command(args, Run("resnet", 0.5 * lr_for_batch("resnet", 512), 60), threads=1)
    assert mixer[-6:] == ["--init-from", "checkpoints/{arch}", "--cutmix", "0.5",
                          "--lr", f"{0.5 * lr_for_batch('mlpmixer', 512):.6g}"]
    assert resnet[-4:-2] == ["--init-from", "checkpoints/{arch}"] and "--cutmix" not in resnet
    # Without --batch-size, a scaled rate still has to be passed explicitly.
    plain = train_command(parse_args(["--data", "d", "--time-budget", "60", "--lr-scale", "0.4"]),
                          Run("vgg", 0.08, 60), threads=1)
    assert plain[plain.index("--lr") + 1] == "0.08"
    assert plain[plain.index("--batch-size") + 1] == str(recipe_for("vgg")["batch_size"])  # the recipe's


def test_parallel_takes_one_runs_explicit_learning_rate_and_halves_it_on_a_retry():
    from train.parallel import Run, parse_args, starting_lr, train_command
    from train.recipes import lr_for_batch

    args = parse_args(["--data", "d", "--time-budget", "60", "--batch-size", "512", "--lr-scale", "0.3",
                       "--arch-flags", "mlpmixer=--cutmix 0.5 --lr 0.0014", "--", "--warmup-epochs", "1"])
    assert starting_lr(args, "mlpmixer") == 0.0014  # what it trains at, reported in the summary
    assert starting_lr(args, "resnet") == pytest.approx(0.3 * lr_for_batch("resnet", 512))  # the recipe's
    retry = Run("mlpmixer", starting_lr(args, "mlpmixer") / 2, 30, attempts=1)
    command = train_command(args, retry, threads=1)
    assert command[-2:] == ["--lr", "0.0007"]  # after the flag it halves, so it wins
    for bad in (["--arch-flags", "vgg=--lr fast"], ["--", "--lr=0"]):
        with pytest.raises(SystemExit):
            parse_args(["--data", "d", "--time-budget", "60", *bad])


def fake_runs_that_exit(monkeypatch, exit_code: int) -> list[dict]:
    """Replaces train.parallel's processes with ones that have already exited; returns each one's environment."""
    import train.parallel as parallel

    environments = []

    class Exited:
        def __init__(self, command, stdout, stderr, env):
            environments.append(env)

        def poll(self):
            return exit_code

    monkeypatch.setattr(parallel.subprocess, "Popen", Exited)
    monkeypatch.setattr(parallel, "POLL_SECONDS", 0.0)
    return environments


def test_parallel_tells_each_run_how_many_share_the_device(tmp_path, monkeypatch):
    import train.parallel as parallel

    environments = fake_runs_that_exit(monkeypatch, 0)
    code = parallel.main(["--data", "d", "--time-budget", "5", "--archs", "vgg,nin", "--sharing-with", "1",
                          "--out", str(tmp_path / "{arch}"), "--log-dir", str(tmp_path / "logs")])
    seen = [env[parallel.SHARED_GPU_RUNS_VARIABLE] for env in environments]
    assert code == 0 and seen == ["3", "3"]  # two runs here and one started elsewhere


def test_parallel_marks_ended_runs_at_the_trial_barrier_and_removes_it(tmp_path, monkeypatch):
    import train.parallel as parallel

    environments, marked = fake_runs_that_exit(monkeypatch, 1), []
    real_mark = parallel.mark_arrived

    def mark_and_record(folder, name):
        marked.append(name)
        real_mark(folder, name)

    monkeypatch.setattr(parallel, "mark_arrived", mark_and_record)
    code = parallel.main(["--data", "d", "--time-budget", "5", "--archs", "vgg,nin",
                          "--out", str(tmp_path / "{arch}"), "--log-dir", str(tmp_path / "logs")])
    barriers = [env[parallel.TRIAL_BARRIER_VARIABLE] for env in environments]
    parties, _, folder = barriers[0].partition(":")
    assert code == 1 and barriers == [barriers[0]] * 2 and parties == "2"
    assert marked == ["vgg", "nin"]  # a run that failed still counts, so the others do not wait for it
    assert not Path(folder).exists()
    with pytest.raises(SystemExit, match="more than once"):
        parallel.main(["--data", "d", "--time-budget", "5", "--archs", "vgg,nin,vgg"])


def test_trial_barrier_waits_for_every_run_or_its_timeout(tmp_path, monkeypatch, capsys):
    import threading

    from train.env import TRIAL_BARRIER_VARIABLE, mark_arrived, pass_trial_barrier, wait_for_trial_barrier

    monkeypatch.delenv(TRIAL_BARRIER_VARIABLE, raising=False)
    assert wait_for_trial_barrier("vgg") == 0.0  # a run on its own
    pass_trial_barrier("vgg")
    assert not any(tmp_path.iterdir())
    monkeypatch.setenv(TRIAL_BARRIER_VARIABLE, f"2:{tmp_path}")
    late = threading.Timer(0.6, mark_arrived, (tmp_path, "nin"))
    late.start()
    waited = wait_for_trial_barrier("vgg", timeout=20, poll=0.05)
    late.join()
    assert 0.5 < waited < 10 and sorted(p.name for p in tmp_path.iterdir()) == ["nin", "vgg"]
    assert wait_for_trial_barrier("vgg", timeout=20) < 0.5  # a restarted run finds everyone there
    monkeypatch.setenv(TRIAL_BARRIER_VARIABLE, f"4:{tmp_path}")
    pass_trial_barrier("resnet")  # resumed: it times no trial, and counts at once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nin", "resnet", "vgg"]
    assert 0.3 <= wait_for_trial_barrier("vgg", timeout=0.3, poll=0.05) < 5
    assert "without the other runs" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--arch-flags", "mlpmixer"], ["--arch-flags", "nonet=--cutmix 0.5"],
                                 ["--arch-flags", "vgg="], ["--lr-scale", "0"]])
def test_parallel_rejects_bad_options(bad, capsys):
    from train.parallel import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--data", "d", "--time-budget", "60", *bad])
    assert "error:" in capsys.readouterr().err


def test_mixed_targets_weigh_labels_partner_and_teacher():
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels, partner = torch.tensor([0, 2]), torch.tensor([1, 0])
    targets = mixed_targets(teacher, labels, partner, own=0.75, teacher_weight=0.4)
    expected = 0.6 * torch.tensor([[0.75, 0.25, 0.0], [0.25, 0.0, 0.75]]) + 0.4 * teacher
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(targets.sum(1), torch.ones(2))
    torch.testing.assert_close(mixed_targets(teacher, labels, labels, 1.0, 1.0), teacher)


def test_teacher_sees_images_normalised_its_own_way(tmp_path, tiny_folder):
    train(tiny_config(tmp_path / "t", tiny_folder, arch="basic_convnet", epochs=1))
    image_set = load_images(str(tiny_folder), 32, tmp_path / "t" / "cache", progress=False)
    model = load_pretrained(tmp_path / "t" / "out")
    t_mean, t_std = torch.tensor(model.config["mean"]), torch.tensor(model.config["std"])
    s_mean, s_std = torch.tensor([0.3, 0.5, 0.2]), torch.tensor([0.1, 0.4, 0.3])  # a student's own statistics
    teacher = Teacher(str(tmp_path / "t" / "out"), image_set, 32, 0, 0.1, s_mean, s_std, "cpu", torch.contiguous_format)
    pixels = image_set.images[:4]
    as_student = normalize(pixels, s_mean, s_std)
    off = torch.autocast("cpu", enabled=False)
    with torch.no_grad():
        expected = torch.softmax(model(normalize(pixels, t_mean, t_std)), -1)
    torch.testing.assert_close(teacher.probs(as_student, off), expected, rtol=1e-4, atol=1e-5)
    assert teacher.record[0]["arch"] == "basic_convnet" and len(teacher.record[0]["sha256"]) == 64


def test_distilled_run_records_its_teachers_and_refuses_one_from_another_split(tmp_path, tiny_folder):
    train(tiny_config(tmp_path / "t", tiny_folder, arch="basic_convnet", epochs=1))
    teacher = str(tmp_path / "t" / "out")
    result = train(tiny_config(tmp_path / "s", tiny_folder, teacher=teacher, teacher_weight=0.7, cutmix=1.0))
    assert result["val_accuracy"] > 0.6
    assert result["recipe"]["teacher"] == teacher and result["recipe"]["teacher_weight"] == 0.7
    assert f"--teacher {teacher}" in result["command"] and "--teacher-weight 0.7" in result["command"]
    assert [t["arch"] for t in result["teachers"]] == ["basic_convnet"]
    # A further stage keeps, per stage, which weights taught it.
    later = train(tiny_config(tmp_path / "s2", tiny_folder, epochs=1, init_from=str(tmp_path / "s" / "out")))
    assert [t["arch"] for t in later["stages"][0]["teachers"]] == ["basic_convnet"]
    assert "teachers" not in later["stages"][1] and "teachers" not in later
    with pytest.raises(ValueError, match="split_seed 0 \\(this run: 1\\)"):
        train(tiny_config(tmp_path / "x", tiny_folder, teacher=teacher, split_seed=1))
    with pytest.raises(ValueError, match="teacher-weight"):
        train(tiny_config(tmp_path / "y", tiny_folder, teacher=teacher, teacher_weight=0.0))
    with pytest.raises(ValueError, match="--teacher"):
        train(tiny_config(tmp_path / "z", tiny_folder, teacher=str(tmp_path / "none")))


def test_teacher_report_scores_each_teacher_and_their_average(tmp_path, tiny_folder, capsys):
    from train.distill import main

    for name, seed in (("a", 0), ("b", 1)):
        train(tiny_config(tmp_path / name, tiny_folder, arch="basic_convnet", epochs=1, seed=seed, bf16=False))
    spec = f"{tmp_path / 'a' / 'out'},{tmp_path / 'b' / 'out'}"
    assert main(["--teacher", spec, "--data", str(tiny_folder), "--cache-dir", str(tmp_path / "cache")]) == 0
    rows = (line.rsplit(None, 1) for line in capsys.readouterr().out.splitlines())
    lines = {name.strip(): value for name, value in rows}
    for name in ("a", "b"):
        recorded = json.loads((tmp_path / name / "out" / "config.json").read_text())["val_accuracy"]
        shown = float(lines[str(tmp_path / name / "out")].strip().rstrip("%")) / 100
        assert abs(shown - recorded) < 1e-3  # the same split and single view the training run scored
    assert "together" in lines
    assert main(["--teacher", str(tmp_path / "none"), "--data", str(tiny_folder)]) == 2


def test_each_recipe_is_its_shipped_checkpoints_first_stage():
    """Every option the first stage's command gave is the recipe's (or, for --arch-args, the class default),
    except teachers, which a default cannot name; recipe_accuracy is what that stage reached."""
    from architectures import default_args, list_models, model_class
    from train.recipes import recipe_for

    checked = 0
    for arch in list_models():
        path = REPO_ROOT / "checkpoints" / arch / "config.json"
        if not path.is_file():
            continue
        config = json.loads(path.read_text())
        first = (config.get("stages") or [config])[0]
        stage = parse_config(shlex.split(first["command"])[3:])
        recipe, cls = recipe_for(arch), model_class(arch)
        given = {k: v for k, v in vars(stage).items() if k in TrainConfig.__dataclass_fields__ and v is not None
                 and k in recipe}
        assert given and all(recipe[k] == v for k, v in given.items()), (arch, given)
        # What neither the first nor the last stage's command gave was the recipe's of the time, which the
        # config's recipe block records (that of the last stage).
        last = parse_config(shlex.split((config.get("stages") or [config])[-1]["command"])[3:])
        unsaid = {k for k in config["recipe"] if k in recipe and k not in given and getattr(last, k) is None}
        assert unsaid and all(recipe[k] == config["recipe"][k] for k in unsaid), (arch, unsaid)
        arch_args = json.loads(stage.arch_args or "{}")
        assert all(default_args(arch)[k] == v for k, v in arch_args.items()), (arch, arch_args)
        assert all(default_args(arch)[k] == (tuple(v) if isinstance(v, list) else v)
                   for k, v in config["arch_args"].items()), (arch, config["arch_args"])
        if stage.teacher:
            assert "teacher" not in cls.recipe and cls.recipe_accuracy is None, arch
        elif config.get("stages"):
            assert cls.recipe_accuracy == pytest.approx(100 * first["val_accuracy"]), arch
        else:  # trained in one go: the run's own last validation, as its log recorded it
            last = json.loads((path.parent / "log.jsonl").read_text().splitlines()[-1])
            assert cls.recipe_accuracy == pytest.approx(100 * last["val_accuracy"], abs=0.005), arch
        checked += 1
    assert checked or not (REPO_ROOT / "checkpoints").is_dir()


def test_training_summary_counts_stages_and_names_the_teachers():
    from architectures.checkpoint import training_summary

    teachers = [{"checkpoint": "checkpoints/vgg", "arch": "vgg"},
                {"checkpoint": "checkpoints/resnet", "arch": "resnet"}]
    assert training_summary({"command": "python -m train --arch nin"}) == "1 stage"
    assert training_summary({"teachers": teachers[:1]}) == "1 stage, distilled from vgg"
    stages = [{}, {}, {"teachers": teachers[:1]}, {"teachers": teachers}]
    assert training_summary({"stages": stages}) == "4 stages; stages 3-4 distilled from vgg, resnet"
    assert training_summary({"stages": [{}, {"teachers": teachers}]}) == "2 stages; stage 2 distilled from vgg, resnet"
    assert training_summary({"stages": [{"teachers": teachers}, {}, {"teachers": teachers}]}) == \
        "3 stages; stages 1, 3 distilled from vgg, resnet"


def test_recipe_table_lists_every_architecture_with_its_recipe_and_checkpoint(tmp_path):
    from architectures import list_models
    from train.recipes import recipe_for, recipe_table

    (tmp_path / "resnet").mkdir()
    (tmp_path / "resnet" / "config.json").write_text(json.dumps({"stages": [{}, {"teachers": [{"arch": "vgg"}]}]}))
    rows = {line.split("`")[1]: line for line in recipe_table(tmp_path).splitlines()
            if line.startswith("| ") and "`" in line}
    assert list(rows) == list_models()
    for arch, row in rows.items():
        recipe = recipe_for(arch)
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1:5] == [str(recipe["epochs"]), str(recipe["batch_size"]), f"{recipe['lr']:g}",
                              recipe["optimizer"]]
        assert cells[-1] == ("2 stages; stage 2 distilled from vgg" if arch == "resnet" else "none")
    assert "`--cutout 8`" in rows["resnet"] and "`--weight-decay 0.05`" in rows["mlpmixer"]


def test_hardware_summary_names_each_machine_once():
    from architectures.checkpoint import hardware_summary

    config = {"hardware": "NVIDIA H100 80GB HBM3, shared by 8 concurrent runs (74 epochs) + Intel(R) Xeon(R) "
                          "Processor, 2 threads (CPU) (15 epochs) + NVIDIA H100 80GB HBM3, shared by 3 concurrent runs"}
    assert hardware_summary(config) == "Intel(R) Xeon(R) Processor, 2 threads (CPU); NVIDIA H100 80GB HBM3"
    assert hardware_summary({}) == "?"
