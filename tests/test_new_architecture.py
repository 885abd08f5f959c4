"""Adding an architecture is its file plus one import: a tiny one, registered from a temporary module, passes
the zoo's generic model, explanation and serving checks with no edit anywhere else.

The module stands in for ``architectures/<name>.py``; importing it is the one import line of
``architectures/__init__.py``. The checks are the ones every registered architecture runs (architecture_checks.py,
which test_models.py runs over the registry), so passing them here is passing what the zoo asks of a model.
"""
from __future__ import annotations

import importlib
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import architecture_checks as checks
import explain
import serve
from architectures import _registry, create_model, list_models, model_class, save_pretrained
from explain.verdict import HEADLINES
from preprocess import CIFAR10_CLASSES

NAME = "tiny_extra_net"
MODULE = textwrap.dedent(f'''
    """TinyExtraNet: two convolutions and a pooled linear head, the smallest network the zoo accepts."""
    import torch.nn as nn

    from architectures import register_model
    from architectures._blocks import ClassifierHead, ConvBNAct, ZooModel, init_weights


    @register_model("{NAME}")
    class TinyExtraNet(ZooModel):
        display_name = "Tiny extra net"
        key_idea = "Two convolutions, then global average pooling and one linear layer."
        paper = "https://example.org/tiny-extra-net"
        year = 2026
        recipe = {{"epochs": 1, "batch_size": 64, "lr": 0.05}}

        def __init__(self, num_classes=10, width=8):
            super().__init__()
            self.features = nn.Sequential(ConvBNAct(3, width), ConvBNAct(width, 2 * width, stride=2))
            self.head = ClassifierHead(2 * width, num_classes)
            self.cam_layers = ("features.0", "features.1")
            init_weights(self)

        def forward_features(self, x):
            return self.features(x)

        def forward_head(self, features):
            return self.head(features)
''')


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """The architecture's file, imported: it registers itself. Unregistered afterwards."""
    folder = tmp_path_factory.mktemp("new_architecture")
    (folder / "tiny_extra_net.py").write_text(MODULE)
    sys.path.insert(0, str(folder))
    try:
        importlib.import_module("tiny_extra_net")
        yield NAME
    finally:
        _registry._MODELS.pop(NAME, None)
        sys.modules.pop("tiny_extra_net", None)
        sys.path.remove(str(folder))


def test_it_is_registered_with_its_facts(registered):
    assert registered in list_models()
    cls = model_class(registered)
    assert cls.display_name and cls.key_idea and cls.paper and cls.year == 2026


@pytest.fixture(scope="module")
def random_model(registered):
    """One random-weights instance for the explanation checks (explain.randomised, as test_explain.py's)."""
    return explain.randomised(create_model(registered))


@pytest.mark.parametrize("check", [checks.check_shapes_finite_and_backward, checks.check_other_num_classes,
                                   checks.check_cam_layers_exist_and_give_spatial_maps,
                                   checks.check_fits_the_size_budget], ids=lambda check: check.__name__)
def test_generic_model_checks(registered, check):
    check(registered)


def test_checkpoint_round_trip(registered, tmp_path):
    checks.check_save_load_round_trip_gives_identical_logits(registered, tmp_path)


@pytest.mark.parametrize("method", explain.METHODS)
def test_generic_explanation_checks(random_model, method):
    checks.check_cam_is_a_map_in_unit_range(random_model, method)
    if method not in explain.GRADIENT_FREE:
        checks.check_target_class_changes_the_map(random_model, method)


def test_generic_layer_and_se_checks(random_model):
    checks.check_every_layer_choice_works(random_model)
    checks.check_no_in_place_activations(random_model)
    checks.check_se_excitations_one_vector_per_block(random_model)


def test_served_like_any_other(registered, tmp_path):
    """A checkpoint of it in a checkpoint folder: listed, predicted, explained and compared by the service
    the app runs on, with its card and its place in the zoo table."""
    model = create_model(registered).eval()
    save_pretrained(model, tmp_path / "checkpoints" / registered,
                    {"class_names": list(CIFAR10_CLASSES), "image_size": 32, "mean": [0.49, 0.48, 0.45],
                     "std": [0.25, 0.24, 0.26], "val_accuracy": 0.5, "val_accuracy_tta": 0.52, "epochs": 1,
                     "train_seconds": 1.0, "hardware": "test"})
    store = serve.ModelStore(tmp_path / "checkpoints", repo="", device="cpu", ood_thresholds={})
    service = serve.ZooService(store)
    assert store.available() == [registered]
    assert ("Tiny extra net  (52.0%)", registered) in serve.architecture_choices(store.configs())
    upload = tmp_path / "upload.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(upload)
    probabilities = service.predict(str(upload), registered)
    assert set(probabilities) == set(CIFAR10_CLASSES) and abs(sum(probabilities.values()) - 1) < 1e-5
    note, preview = service.describe(str(upload), registered)
    assert "Tiny extra net" in note and preview is not None
    explanation = service.explain(str(upload), registered)
    assert explanation.se_plot is None and "has no SE blocks" in explanation.note
    assert explanation.note.startswith(tuple(HEADLINES.values()))  # it opens with the verdict on the map
    frame, gallery, summary = service.compare(str(upload))
    assert len(gallery) == 1 and "Majority vote" in summary
    assert "Tiny extra net" in service.zoo_details(registered)[2]
    assert service.zoo.frame(store.configs())["name"].tolist() == [registered]
