"""The shipped checkpoints, and the checkpoint format's defences against bad or hostile files."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import explain
from architectures import (CheckpointError, create_model, default_args, list_models, load_pretrained, model_class,
                           save_pretrained)
from architectures.checkpoint import WEIGHTS_NAME, file_sha256, round_parameters
from conftest import CHECKPOINTS
from preprocess import CIFAR10_CLASSES
from tools.zoo_table import (END, FAITHFUL_END, FAITHFUL_START, RECIPE_END, RECIPE_START, ROBUST_END, ROBUST_START,
                              START, faithfulness_table, markdown_table, robustness_table, zoo_rows)
from train.recipes import recipe_table

REQUIRED = ["arch", "arch_args", "class_names", "image_size", "mean", "std", "val_accuracy", "val_accuracy_tta",
            "val_split", "params", "epochs", "train_seconds", "hardware", "dataset", "git_commit"]
SHIPPED = sorted(p.name for p in CHECKPOINTS.iterdir() if (p / "config.json").is_file()) if CHECKPOINTS.is_dir() else []
FIRST_CHECKPOINT_BAR = 0.75  # issue #2: every first checkpoint reaches 75% validation accuracy
# Issue #5's goals, and why each shipped checkpoint is still short of its goal. The mark is strict: a
# retrained checkpoint that reaches its goal makes the test fail until its entry is removed here.
SHORT_OF_GOAL = {name: "short after the GPU time lent so far (15 minutes a session, one H100 shared by 3-11 runs)"
                 for name in list_models() if name not in ("basic_convnet", "alexnet")}
SHORT_OF_GOAL["mlpmixer"] = ("overfits with flip-and-translate alone (train 98%, val 78% at 78 epochs); CutMix and "
                             "distillation took it to 83.8% served in 267 epochs, where the public 90.8% took 300")


def test_shipped_checkpoints_fit_the_budget():
    sizes = {name: (CHECKPOINTS / name / "model.safetensors").stat().st_size for name in SHIPPED}
    assert SHIPPED and max(sizes.values()) <= 10_000_000, sizes
    assert sum(sizes.values()) <= 40_000_000, sizes
    # Training stores float16 (2 bytes a parameter): the eleven default models, shipped or not, stay within
    # the 40 MB of a Space, and every shipped checkpoint is stored so.
    assert sum(2 * sum(p.numel() for p in create_model(n).parameters()) for n in list_models()) <= 40_000_000
    dtypes = {name: json.loads((CHECKPOINTS / name / "config.json").read_text()).get("weights_dtype")
              for name in SHIPPED}
    assert set(dtypes.values()) == {"float16"}, dtypes


def test_all_eleven_are_shipped():
    assert SHIPPED == sorted(list_models())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_loads_and_matches_registry(name):
    model = load_pretrained(CHECKPOINTS / name)
    config = json.loads((CHECKPOINTS / name / "config.json").read_text())
    for key in REQUIRED:
        assert key in config, key
    assert config["arch"] == name
    assert config["arch_args"] == json.loads(json.dumps(default_args(name)))
    assert config["class_names"] == list(CIFAR10_CLASSES)
    assert config["params"] == sum(p.numel() for p in model.parameters())
    assert (CHECKPOINTS / name / "curves.png").is_file()
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(1, 3, 32, 32))).all()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_reaches_the_first_bar(name):
    config = json.loads((CHECKPOINTS / name / "config.json").read_text())
    assert config["val_accuracy"] >= FIRST_CHECKPOINT_BAR, f"{name}: {config['val_accuracy']}"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_reaches_its_goal(name, request):
    if name in SHORT_OF_GOAL:
        request.applymarker(pytest.mark.xfail(reason=SHORT_OF_GOAL[name], strict=True))
    config = json.loads((CHECKPOINTS / name / "config.json").read_text())
    # The app serves test-time augmented probabilities, so the goal is judged on that figure (issue #5 allows
    # test-time augmentation when the app uses the same); the model-alone figure is in the README beside it.
    assert 100 * config["val_accuracy_tta"] >= model_class(name).goal_accuracy, f"{name}: {config['val_accuracy_tta']}"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_records_the_recommended_cam(name):
    """config.json's ``cam`` names a method, a layer the model has, and the command that chose it."""
    config = json.loads((CHECKPOINTS / name / "config.json").read_text())
    method, layer = config["cam"]["method"], config["cam"]["layer"]
    assert explain.recommended_cam(config) == (method, layer)
    assert method in explain.METHODS
    assert layer is None or layer in create_model(name, **config["arch_args"]).cam_layers
    assert config["cam"]["chosen_by"].startswith(f"python -m tools.choose_cam --checkpoint checkpoints/{name} ")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_records_the_ood_threshold_of_its_weights(name):
    """config.json's ``ood`` is a valid threshold measured on these very weights (a stale one is ignored)."""
    entry = json.loads((CHECKPOINTS / name / "config.json").read_text())["ood"]
    assert entry["score"] in ("max_prob", "entropy") and math.isfinite(entry["threshold"])
    assert entry["val_images"] > 0 and 0 < entry["keep_fraction"] < 1
    assert entry["weights_sha256"] == file_sha256(CHECKPOINTS / name / WEIGHTS_NAME)


def test_readme_zoo_table_matches_the_shipped_configs():
    """The README's tables (zoo, recipes, faithfulness, robustness) and commands are generated from the configs;
    a retrained checkpoint must be followed by `python -m tools.zoo_table --write README.md`."""
    readme = (CHECKPOINTS.parent / "README.md").read_text()
    rows = zoo_rows(CHECKPOINTS)  # loads every checkpoint and counts its MACs: once for every table
    shown = readme[readme.index(START) + len(START):readme.index(END)].strip()
    assert shown == markdown_table(rows)
    recipes = readme[readme.index(RECIPE_START) + len(RECIPE_START):readme.index(RECIPE_END)].strip()
    assert recipes == recipe_table(CHECKPOINTS)
    faithful = readme[readme.index(FAITHFUL_START) + len(FAITHFUL_START):readme.index(FAITHFUL_END)].strip()
    assert faithful == faithfulness_table(rows)
    robust = readme[readme.index(ROBUST_START) + len(ROBUST_START):readme.index(ROBUST_END)].strip()
    assert robust == robustness_table(rows)


@pytest.fixture
def saved(tmp_path):
    model = create_model("resnet", blocks_per_stage=1, width=8, num_classes=2)
    config = {"class_names": ["a", "b"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    return save_pretrained(model, tmp_path / "ckpt", config)


def test_truncated_weights_give_a_clear_error(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_pretrained(saved)


def test_garbage_weights_give_a_clear_error(saved):
    (saved / "model.safetensors").write_bytes(b"\x80\x04this is a pickle, not safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_pretrained(saved)


def test_weights_of_another_shape_are_refused(saved, tmp_path):
    other = save_pretrained(create_model("resnet", blocks_per_stage=1, width=16, num_classes=2), tmp_path / "o",
                            {"class_names": ["a", "b"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3})
    shutil.copy(other / "model.safetensors", saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="shape"):
        load_pretrained(saved)


@pytest.mark.parametrize("change", [
    {"arch": "../../etc/passwd"}, {"arch": "os.system"}, {"class_names": []}, {"class_names": "cat"},
    {"image_size": 10 ** 9}, {"std": [0, 1, 1]}, {"mean": [0.5]}, {"arch_args": {"width": 10 ** 9}},
    {"arch_args": {"evil": 1}},
])
def test_bad_config_is_refused_before_building(saved, change):
    config = json.loads((saved / "config.json").read_text())
    config.update(change)
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError):
        load_pretrained(saved)


def test_config_that_is_not_json_is_refused(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_pretrained(saved)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder"):
        load_pretrained(tmp_path / "does" / "not" / "exist")


def test_interrupted_save_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    import architectures.checkpoint as checkpoint

    before = {name: (saved / name).read_bytes() for name in ("model.safetensors", "config.json")}

    def crash_midway(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a file")
        raise KeyboardInterrupt  # the process is interrupted while writing

    monkeypatch.setattr(checkpoint, "save_file", crash_midway)
    model = create_model("resnet", blocks_per_stage=1, width=8, num_classes=2)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(model, saved, {"class_names": ["a", "b"], "image_size": 32, "mean": [0.1] * 3, "std": [1] * 3})
    assert {name: (saved / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]  # no temporary left
    load_pretrained(saved)


def test_class_names_must_match_the_model_outputs(tmp_path):
    with pytest.raises(CheckpointError, match="class names"):
        save_pretrained(create_model("resnet", blocks_per_stage=1, width=8), tmp_path / "x",
                        {"class_names": ["a", "b"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3})


def test_float16_storage_halves_the_file_and_loads_exactly_what_was_measured(tmp_path):
    model = create_model("resnet", blocks_per_stage=1, width=16, num_classes=2)
    model.train()(torch.randn(8, 3, 32, 32) * 3)  # running statistics that are not the defaults
    model.eval()
    config = {"class_names": ["a", "b"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    full = save_pretrained(model, tmp_path / "full", config)
    round_parameters(model, "float16")
    half = save_pretrained(model, tmp_path / "half", config, "float16")
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    stored = load_file(half / "model.safetensors")
    parameters = dict(model.named_parameters())
    assert {stored[name].dtype for name in parameters} == {torch.float16}
    assert {stored[name].dtype for name in stored if name.endswith("running_var")} == {torch.float32}
    loaded = load_pretrained(half)
    assert loaded.config["weights_dtype"] == "float16"
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}  # it runs in float32 as before
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))  # the rounded model measured is the model served


def test_unknown_weights_dtype_and_integer_weights_are_refused(saved):
    model = create_model("resnet", blocks_per_stage=1, width=8, num_classes=2)
    config = {"class_names": ["a", "b"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    with pytest.raises(CheckpointError, match="weights_dtype"):
        save_pretrained(model, saved, config, "int8")
    state = load_file(saved / "model.safetensors")
    name = next(iter(dict(model.named_parameters())))
    save_file({**state, name: state[name].to(torch.int32)}, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match="int32"):
        load_pretrained(saved)
