"""The checks every architecture of the zoo passes, as plain functions (no test collects this module).

test_models.py runs the model checks over every registered architecture; test_new_architecture.py runs all of
them on one registered from a temporary file, which is how it shows that a new architecture needs its file and
its registration and nothing else. The explanation checks are test_explain.py's per-architecture checks, written
once here so that both modules can run the same ones.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import explain
from architectures import create_model, load_pretrained, save_pretrained
from architectures._blocks import SqueezeExcite, ZooModel

MAX_CHECKPOINT_BYTES = 10 * 1000 * 1000  # one checkpoint file (float16 weights)


# --- the model --------------------------------------------------------------------------------------------------
def check_shapes_finite_and_backward(name: str) -> None:
    """Logits of the right shape, finite, with a finite gradient for every parameter; forward_features then
    forward_head is the forward pass."""
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


def check_other_num_classes(name: str) -> None:
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def check_cam_layers_exist_and_give_spatial_maps(name: str) -> None:
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
    assert set(outputs) == set(model.cam_layers)
    for layer, output in outputs.items():
        spatial = model.cam_reshape(output)
        assert spatial.ndim == 4 and spatial.shape[-1] >= 2, (layer, tuple(spatial.shape))


def check_fits_the_size_budget(name: str) -> None:
    # Checkpoints store float16 unless asked otherwise (TrainConfig.weights_dtype): 2 bytes a parameter.
    # A float32 save (--weights-dtype float32) of the widened VGG would be 10.6 MB.
    params = sum(p.numel() for p in create_model(name).parameters())
    assert params * 2 <= MAX_CHECKPOINT_BYTES


def check_save_load_round_trip_gives_identical_logits(name: str, folder: Path) -> None:
    torch.manual_seed(1)
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():  # make BatchNorm statistics non-trivial, so they must round-trip too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    config = {"class_names": ["a", "b", "c"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    save_pretrained(model, folder / "ckpt", config)
    loaded = load_pretrained(folder / "ckpt")
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.config["class_names"] == ["a", "b", "c"]
    assert loaded.config["arch"] == name


# --- its explanations (random weights: explain.randomised, so the maps are not constant) -----------------------
def random_input(seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def hooks_left(model) -> list[str]:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [f"{name}.{kind}" for name, module in model.named_modules() for kind in kinds if getattr(module, kind)]


def per_class_maps(model, method: str = "gradcam", layer: str | None = None) -> np.ndarray:
    """The maps of one image for each class as target (classes x H x W), in one batched call."""
    x = random_input(1).expand(model.num_classes, -1, -1, -1)
    return explain.cam_batch(model, x, targets=range(model.num_classes), method=method, layer=layer)[0]


def check_cam_is_a_map_in_unit_range(model, method: str) -> None:
    heatmap, probs = explain.cam_with_prediction(model, random_input(), method=method)
    assert heatmap.shape == (32, 32) and heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1
    assert probs.shape == (10,) and abs(probs.sum() - 1) < 1e-5
    assert hooks_left(model) == []


def check_every_layer_choice_works(model) -> None:
    layers = explain.cam_layer_choices(model)
    assert layers and layers[-1] == model.default_cam_layer
    for layer in layers:
        heatmap = explain.cam(model, random_input(), layer=layer)
        assert heatmap.shape == (32, 32) and np.isfinite(heatmap).all(), layer


def check_target_class_changes_the_map(model, method: str) -> None:
    """One image, each of the ten classes as target: the maps must not all be the same.

    Not two fixed classes: with random weights a class's Grad-CAM can be all zero (no positive evidence
    anywhere), and so can another's.
    """
    if method in explain.LAYER_FREE:
        with torch.no_grad():
            logits = model(torch.cat([random_input(0), random_input(1)]))
        if torch.allclose(logits[0], logits[1], atol=1e-9):
            # Random EfficientNet's logits are ~1e-13 whatever the image: blanking changes nothing to map.
            pytest.skip(f"random-weights {model.arch}'s output does not depend on its input")
    maps = per_class_maps(model, method=method)
    assert any(not np.allclose(maps[0], other, atol=1e-3) for other in maps[1:])


def check_no_in_place_activations(model) -> None:
    """In-place ops overwrite what a hook or autograd saved: the known pytorch-grad-cam pitfall."""
    assert [n for n, m in model.named_modules() if getattr(m, "inplace", False)] == []


def check_se_excitations_one_vector_per_block(model) -> None:
    """One excitation vector per SE block, each value strictly inside (0, 1); none for a model without SE."""
    excitations = explain.se_excitations(model, random_input())
    blocks = [(name, module.fc2.out_channels) for name, module in model.named_modules()
              if isinstance(module, SqueezeExcite)]
    assert [(name, len(values)) for name, values in excitations] == blocks
    assert explain.has_se(model) == bool(blocks)
    for name, values in excitations:
        assert ((values > 0) & (values < 1)).all(), name
