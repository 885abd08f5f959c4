"""The Look inside view and the linear probes: every registered architecture gets the same generic view,
the probes shipped with the checkpoints rise with depth, and bad input gets the app's clear error."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import explain.inside as inside
import serve
import serve.inside
from architectures import create_model, list_models, load_pretrained
from architectures.checkpoint import WEIGHTS_NAME, file_sha256
from conftest import CHECKPOINTS, random_checkpoint
from explain.diagram import diagram_facts
from test_new_architecture import registered  # noqa: F401  the extra architecture, as a fixture
from tools import probes as probe_tool
from train.data import checkpoint_split, load_images

REPO_ROOT = Path(__file__).resolve().parent.parent
PHOTO = REPO_ROOT / "examples" / "cat_chelsea.jpg"
SHIPPED = [name for name in list_models() if (CHECKPOINTS / name / inside.PROBES_JSON).is_file()]


def _view_of(folder: Path, name: str):
    service = serve.ZooService(serve.ModelStore(folder, repo="", device="cpu", ood_thresholds={}))
    return serve.InsideService(service), service


def check_view(folder: Path, name: str):
    """The generic checks every architecture's view must pass: one picture per diagram stage, in order, under the
    diagram's names and shapes, with tiles large enough to see and the extras its blocks call for."""
    view_service, service = _view_of(folder, name)
    gallery, note = view_service.inside(str(PHOTO), name)
    loaded = service.model(name)
    stages = diagram_facts(create_model(name, **loaded.config.get("arch_args", {})))
    assert len(gallery) == len(stages)
    for (picture, caption), stage in zip(gallery, stages):
        assert caption.startswith(f"{inside.stage_label(stage)} · {inside.shape_text(stage.out_shape)}")
        assert picture.width >= 4 * inside.TILE and picture.height >= inside.TILE
    assert "activation × gradient" in note and note.count("\n- **") == len(stages)
    views = inside.look_inside(loaded.model, service.served_prediction(str(PHOTO), name)[2].x, stages, 0)
    for view, stage in zip(views, stages):
        if len(stage.out_shape) >= 2:
            assert view.maps is not None and len(view.channels) == min(inside.TILES, view.maps.shape[0])
            assert view.maps.shape[0] == len(view.channels) and np.isfinite(view.maps).all()
        else:
            assert view.values is not None and view.values.shape == stage.out_shape
        assert ("se" in stage.features) == (view.excitation is not None)
        assert ("inception" in stage.features) == (len(view.branches) >= 2)
        if "dense" in stage.features:
            assert view.growth == sorted(view.growth) and view.growth[-1] == stage.out_shape[0]
        if "token_mlp" in stage.features:
            assert view.token_weights is not None and view.token_weights.shape[1] ** 2 == stage.out_shape[0]
    with_filters = [v for v in views if v.filters is not None]
    assert len(with_filters) == (1 if inside.first_colour_conv(loaded.model) else 0)
    if with_filters:
        conv_name = inside.first_colour_conv(loaded.model)[0]  # drawn beside the stage that holds that convolution
        assert any(conv_name == n or conv_name.startswith(n + ".") or not n for n in with_filters[0].stage.names)
        assert with_filters[0].filters.shape[-1] == 3 and 0 <= with_filters[0].filters.min() <= 1


@pytest.mark.parametrize("name", list_models())
def test_every_registered_architecture_gets_a_view(name, tmp_path):
    random_checkpoint(tmp_path, name)
    check_view(tmp_path, name)


def test_the_extra_architecture_gets_a_view_with_no_edit(registered, tmp_path):  # noqa: F811
    random_checkpoint(tmp_path, registered)
    check_view(tmp_path, registered)


def test_the_view_has_no_code_per_architecture():
    """The generic view and its service name no architecture: what differs comes from the model's structure."""
    for module in (inside, serve.inside):
        source = Path(module.__file__).read_text().lower()
        assert not [name for name in list_models() if re.search(rf"\b{re.escape(name.lower())}\b", source)]


def test_channels_are_the_largest_activation_times_gradient(tmp_path):
    """The drawn channels of a stage are exactly those with the largest summed activation × gradient."""
    model = create_model("resnet").eval()
    stages = diagram_facts(model)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    views = inside.look_inside(model, x, stages, target=3)
    middle = 2
    module = model.get_submodule(stages[middle].names[-1])
    saved = {}
    handle = module.register_forward_hook(lambda m, i, o: saved.setdefault("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[0, 3], saved["a"])
    score = (saved["a"] * grad)[0].sum((1, 2))
    assert views[middle].channels == score.argsort(descending=True)[:inside.TILES].tolist()


def test_bad_input_is_a_request_error(tmp_path):
    random_checkpoint(tmp_path, "resnet")
    view_service, _ = _view_of(tmp_path, "resnet")
    assert view_service.inside(None, "resnet") is None
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(serve.RequestError, match="Cannot use this upload"):
        view_service.inside(str(broken), "resnet")
    with pytest.raises(serve.RequestError, match="unknown architecture"):
        view_service.inside(str(PHOTO), "../resnet")
    with pytest.raises(serve.RequestError, match="no checkpoint yet"):
        view_service.inside(str(PHOTO), "vgg")
    assert len(view_service.inside(str(PHOTO), "resnet")[0]) == len(diagram_facts(create_model("resnet")))


# --- probes ---------------------------------------------------------------------------------------------
def test_all_eleven_checkpoints_ship_probes():
    assert SHIPPED == [name for name in list_models() if (CHECKPOINTS / name / WEIGHTS_NAME).is_file()]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_probes_rise_with_depth_and_match_their_weights(name):
    facts = json.loads((CHECKPOINTS / name / inside.PROBES_JSON).read_text())
    model = load_pretrained(CHECKPOINTS / name)
    assert facts["weights_sha256"] == file_sha256(CHECKPOINTS / name / WEIGHTS_NAME)
    assert [row["stage"] for row in facts["stages"]] == [inside.stage_label(s) for s in diagram_facts(model)]
    assert facts["train_images"] >= 1000 and facts["val_images"] == 5000 and facts["command"]
    accuracy = [row["val_accuracy"] for row in facts["stages"]]
    assert accuracy[-1] > accuracy[0] + 0.2  # the class emerges with depth
    assert max(accuracy) - accuracy[-1] < 0.05  # and is most readable near the end
    # The last probe reads the logits: it cannot be far from the model's own validation accuracy.
    assert abs(accuracy[-1] - model.config["val_accuracy"]) < 0.05
    assert inside.load_probes(CHECKPOINTS / name, facts["weights_sha256"]) is not None


@pytest.mark.parametrize("name", SHIPPED[:1] + SHIPPED[-1:])
def test_the_view_shows_each_stage_probe_guess_for_shipped_weights(name):
    view_service, _ = _view_of(CHECKPOINTS, name)
    gallery, note = view_service.inside(str(PHOTO), name)
    assert all(" · probe: " in caption for _, caption in gallery)
    assert "linear probe says" in note
    assert view_service.depth_plot(name).width >= 600
    assert view_service.zoo_chart().width >= 800


def test_probes_are_fitted_on_training_images_and_scored_on_the_validation_split(tmp_path, tiny_folder):
    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    from architectures import save_pretrained
    save_pretrained(create_model("basic_convnet", num_classes=3), folder, {
        "class_names": ["blue", "green", "red"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
        "val_accuracy": 0.5, "epochs": 1, "train_seconds": 1.0, "hardware": "none"})
    model = load_pretrained(folder)
    image_set = load_images(str(tiny_folder), 32, tmp_path / "cache", progress=False)
    facts = probe_tool.write_probes(model, image_set, folder, train_images=60, command="test")
    train_idx, val_idx = checkpoint_split(model.config, image_set)
    subset = probe_tool.balanced_subset(image_set.labels, train_idx, 60)
    assert facts["train_images"] == len(subset) == 60 and facts["val_images"] == len(val_idx)
    assert not set(subset.tolist()) & set(val_idx.tolist())
    assert len(facts["stages"]) == len(diagram_facts(model))
    assert all(0 <= row["val_accuracy"] <= 1 for row in facts["stages"])
    # Colour classes: the pooled features of the very first stage already separate them.
    assert facts["stages"][0]["val_accuracy"] > 0.8
    assert inside.load_probes(folder, file_sha256(folder / WEIGHTS_NAME)) is not None
    assert inside.load_probes(folder, "0" * 64) is None  # probes of other weights are not shown
