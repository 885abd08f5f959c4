"""Every registered architecture, tested the same way (a new one is covered without touching this file)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import architectures
from architectures import create_model, list_models, load_pretrained, save_pretrained
from architectures._blocks import SqueezeExcite, ZooModel
from architectures._registry import model_class
from train.config import TrainConfig
from train.recipes import recipe_for

MAX_CHECKPOINT_BYTES = 10 * 1000 * 1000
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
    torch.manual_seed(0)
    model = create_model(name)
    assert isinstance(model, ZooModel)
    model.train()
    x = torch.randn(4, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (4, 10)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 10)
        features = model.forward_features(x)
        assert features.ndim == 4 and features.shape[0] == 4
        torch.testing.assert_close(model.forward_head(features), model(x))


@pytest.mark.parametrize("name", list_models())
def test_other_num_classes(name):
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("name", list_models())
def test_cam_layers_exist_and_give_spatial_maps(name):
    model = create_model(name).eval()
    modules = dict(model.named_modules())
    assert model.cam_layers and model.default_cam_layer == model.cam_layers[-1]
    outputs = {}
    hooks = [modules[layer].register_forward_hook(lambda m, i, o, layer=layer: outputs.__setitem__(layer, o))
             for layer in model.cam_layers]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    for layer, output in outputs.items():
        spatial = model.cam_reshape(output)
        assert spatial.ndim == 4 and spatial.shape[-1] >= 2, (layer, tuple(spatial.shape))


@pytest.mark.parametrize("name", list_models())
def test_fits_the_size_budget(name):
    # Checkpoints store float16 unless asked otherwise (TrainConfig.weights_dtype): 2 bytes a parameter.
    # A float32 save (--weights-dtype float32) of the widened VGG would be 10.6 MB.
    params = sum(p.numel() for p in create_model(name).parameters())
    assert params * 2 <= MAX_CHECKPOINT_BYTES


def test_senet_and_efficientnet_share_the_se_module():
    for name in ("senet", "efficientnet"):
        se_blocks = [m for m in create_model(name).modules() if isinstance(m, SqueezeExcite)]
        assert se_blocks, name
        assert all(isinstance(block.gate, torch.nn.Sigmoid) for block in se_blocks)
    for name in set(list_models()) - {"senet", "efficientnet"}:
        assert not any(isinstance(m, SqueezeExcite) for m in create_model(name).modules()), name


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip_gives_identical_logits(name, tmp_path):
    torch.manual_seed(1)
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():  # make BatchNorm statistics non-trivial, so they must round-trip too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    config = {"class_names": ["a", "b", "c"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    save_pretrained(model, tmp_path / "ckpt", config)
    loaded = load_pretrained(tmp_path / "ckpt")
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.config["class_names"] == ["a", "b", "c"]
    assert loaded.config["arch"] == name
