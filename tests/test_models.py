"""Every registered architecture, tested the same way (a new one is covered without touching this file).

The per-architecture checks live in architecture_checks.py, so that test_new_architecture.py runs the same ones.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import architectures
import architecture_checks as checks
from architectures import create_model, list_models
from architectures._blocks import SqueezeExcite, ZooModel
from architectures._registry import model_class
from train.config import TrainConfig
from train.recipes import recipe_for

# Modules of the package that hold shared code, not an architecture.
NOT_ARCHITECTURES = {"__init__", "_blocks", "_registry", "checkpoint", "measure"}


def test_every_architecture_file_registers_its_model():
    # One file per architecture, named after it (mlp_mixer.py registers "mlpmixer"): importing the package
    # registers them all, and nothing is registered twice.
    files = {path.stem for path in Path(architectures.__file__).parent.glob("*.py")} - NOT_ARCHITECTURES
    names = list_models()
    assert len(names) == len(set(names)) and len(names) >= 11
    assert {name.replace("_", "") for name in names} == {stem.replace("_", "") for stem in files}
    for name in names:
        module = model_class(name).__module__.rpartition(".")[2]
        assert module.replace("_", "") == name.replace("_", ""), (name, module)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        create_model("lenet")
    for name in list_models():
        assert name in str(error.value)


@pytest.mark.parametrize("name", list_models())
def test_every_model_carries_its_facts(name):
    cls = model_class(name)
    assert issubclass(cls, ZooModel)
    for text in (cls.display_name, cls.key_idea):
        assert isinstance(text, str) and text.strip()
    assert cls.paper.startswith(("http://", "https://"))
    assert isinstance(cls.year, int) and 1980 <= cls.year <= 2100
    for percent in (cls.seed_accuracy, cls.goal_accuracy, cls.recipe_accuracy):
        assert percent is None or (isinstance(percent, float) and 10 < percent <= 100), percent
    assert cls.goal_accuracy is not None
    # The recipe is TrainConfig overrides (epochs at least), each of a field the recipe may fill.
    fillable = {f.name for f in dataclasses.fields(TrainConfig) if f.default is None}
    assert isinstance(cls.recipe, dict) and "epochs" in cls.recipe
    assert set(cls.recipe) <= fillable, set(cls.recipe) - fillable
    resolved = TrainConfig(arch=name).resolved(recipe_for(name))  # over train.recipes.BASE, every field is set
    assert all(getattr(resolved, key) == value for key, value in cls.recipe.items())


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        architectures.register_model("resnet")(lambda num_classes=10: None)


def test_unknown_argument_is_refused():
    with pytest.raises(ValueError, match="takes no argument"):
        create_model("resnet", depth_of_field=3)


@pytest.mark.parametrize("name", list_models())
def test_shapes_finite_and_backward(name):
    checks.check_shapes_finite_and_backward(name)


@pytest.mark.parametrize("name", list_models())
def test_other_num_classes(name):
    checks.check_other_num_classes(name)


@pytest.mark.parametrize("name", list_models())
def test_cam_layers_exist_and_give_spatial_maps(name):
    checks.check_cam_layers_exist_and_give_spatial_maps(name)


@pytest.mark.parametrize("name", list_models())
def test_fits_the_size_budget(name):
    checks.check_fits_the_size_budget(name)


def test_senet_and_efficientnet_share_the_se_module():
    for name in ("senet", "efficientnet"):
        se_blocks = [m for m in create_model(name).modules() if isinstance(m, SqueezeExcite)]
        assert se_blocks, name
        assert all(isinstance(block.gate, torch.nn.Sigmoid) for block in se_blocks)
    for name in set(list_models()) - {"senet", "efficientnet"}:
        assert not any(isinstance(m, SqueezeExcite) for m in create_model(name).modules()), name


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip_gives_identical_logits(name, tmp_path):
    checks.check_save_load_round_trip_gives_identical_logits(name, tmp_path)
