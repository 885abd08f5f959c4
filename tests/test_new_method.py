"""Adding an explanation method is one entry in ``explain.methods``' table: a tiny one, registered here, is listed,
computed, checked by the verdict and served by /explain's service with no edit anywhere else (as
test_new_architecture.py shows for an architecture)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import explain
import serve
from architectures import create_model, save_pretrained
from explain.methods import Kind, Method
from preprocess import CIFAR10_CLASSES

NAME = "gradient-magnitude"


def gradient_magnitude(model, x, targets, layer):
    """The absolute input gradient of the class probability, summed over colour channels: saliency in its
    oldest form (Simonyan et al., 2014)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        probs = torch.softmax(model.eval()(x), 1)
        classes = probs.argmax(1) if targets is None else torch.as_tensor(targets)
        probs.gather(1, classes[:, None]).sum().backward()
    model.zero_grad(set_to_none=True)
    return explain.unit_range(x.grad.abs().sum(1).numpy()), probs.detach().numpy()


@pytest.fixture
def registered():
    method = explain.methods.register(Method(NAME, Kind.INPUT, gradient_magnitude, summary="|d p / d x|"))
    yield method
    del explain.methods.TABLE[NAME]


def test_one_entry_lists_computes_and_checks_a_new_method(registered):
    assert NAME in explain.METHODS and NAME in explain.LAYER_FREE and NAME not in explain.FUSED
    model = create_model("resnet").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps, probs = explain.cam_batch(model, x, [3, 5], NAME)
    assert maps.shape == (2, 32, 32) and 0 <= maps.min() and maps.max() == pytest.approx(1.0)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    heat = explain.cam(model, x[:1], 3, NAME, layer=model.cam_layers[0])  # a layer-free method ignores the layer
    np.testing.assert_allclose(heat, maps[0], atol=1e-6)
    verdict = explain.map_verdict(explain.faithfulness(model, x[:1], heat, 3,
                                                       random_weights_heatmap=explain.cam(model, x[:1], 3, NAME)))
    assert verdict.outcome in set(explain.Outcome)
    with pytest.raises(ValueError, match="already registered"):
        explain.methods.register(registered)


def test_the_app_serves_a_new_method(registered, tmp_path):
    model = create_model("resnet")
    save_pretrained(model, tmp_path / "resnet", {"class_names": list(CIFAR10_CLASSES), "image_size": 32,
                                                 "mean": [0.5] * 3, "std": [0.25] * 3})
    service = serve.ZooService(serve.ModelStore(tmp_path, repo="", device="cpu", ood_thresholds={}))
    upload = tmp_path / "upload.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(upload)
    explanation = service.explain(str(upload), "resnet", method=NAME)
    assert f"{NAME} at the input" in explanation.note and len(explanation.faithfulness) == 4


def test_an_unknown_method_names_the_registered_ones(registered):
    with pytest.raises(ValueError, match=NAME):
        explain.cam(create_model("resnet"), torch.zeros(1, 3, 32, 32), method="no-such-method")
