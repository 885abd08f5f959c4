"""The architecture diagrams (explain.diagram) and the model zoo plots (serve.zoo_plots)."""
from __future__ import annotations

import json

import pytest
import torch.nn as nn
from PIL import Image

from architectures import create_model, list_models
from explain.diagram import architecture_diagram, diagram_facts, diagram_for
from serve.zoo_plots import accuracy_vs_parameters, evolution, paper_years

from conftest import CHECKPOINTS

YEARS = dict(basic_convnet=1998, alexnet=2012, vgg=2014, nin=2013, googlenet=2014, bn_convnet=2015, resnet=2015,
             densenet=2016, senet=2017, efficientnet=2019, mlpmixer=2021)

# What each architecture's diagram must show: the feature its characteristic block is recognised by.
CHARACTERISTIC = {"resnet": {"residual"}, "googlenet": {"inception", "concat"}, "densenet": {"dense", "concat"},
                  "senet": {"se", "residual"}, "efficientnet": {"se", "residual"},
                  "mlpmixer": {"token_mlp", "channel_mlp"}}


@pytest.mark.parametrize("name", list_models())
def test_diagram_image_and_facts(name):
    model = create_model(name)
    image = diagram_for(name)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.width >= 600
    stages = diagram_facts(model)
    assert sum(stage.params for stage in stages) == sum(p.numel() for p in model.parameters())
    assert stages[0].in_shape == (3, 32, 32)
    assert stages[-1].kind == "classifier" and stages[-1].out_shape[0] == model.num_classes
    assert len(stages) <= 12, "grouping should keep the main flow short enough to read"
    found = set().union(*(stage.features for stage in stages))
    assert CHARACTERISTIC.get(name, set()) <= found
    if name not in CHARACTERISTIC:  # the plain networks are not mistaken for one with special blocks
        assert not found & {"residual", "inception", "dense", "se", "token_mlp"}


def test_facts_detail():
    resnet = diagram_facts(create_model("resnet"))
    blocks = [s for s in resnet if "residual" in s.features]
    assert [s.count for s in blocks] == [3, 3, 3] and [s.out_shape for s in blocks][-1] == (128, 8, 8)
    googlenet = [s for s in diagram_facts(create_model("googlenet")) if "inception" in s.features]
    assert googlenet and all(s.branches == 4 for s in googlenet)
    dense = [s for s in diagram_facts(create_model("densenet")) if "dense" in s.features]
    assert len(dense) == 3 and all("+24 channels" in s.detail for s in dense)
    assert dense[0].out_shape[0] == dense[0].in_shape[0] + 6 * 24


def test_checkpoint_arch_args_change_the_diagram():
    """Cached per (name, arch_args): a deeper ResNet has more blocks per stage."""
    deeper = diagram_facts(create_model("resnet", blocks_per_stage=5))
    assert [s.count for s in deeper if "residual" in s.features] == [5, 5, 5]
    image = diagram_for("resnet", json.dumps({"blocks_per_stage": 5}))
    assert image is diagram_for("resnet", json.dumps({"blocks_per_stage": 5}))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.act(self.conv(x)))))


@pytest.mark.parametrize("model", [Tiny(), nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),
                                                         nn.Linear(4 * 30 * 30, 3))])
def test_an_unregistered_model_still_draws(model):
    stages = diagram_facts(model)
    assert sum(s.params for s in stages) == sum(p.numel() for p in model.parameters())
    assert stages[0].in_shape == (3, 32, 32) and stages[-1].kind == "classifier"
    image = architecture_diagram(model)
    assert image.mode == "RGB" and image.width >= 600


# ------------------------------------------------------------------------------------------ zoo plots

def zoo_rows() -> list[dict]:
    rows = []
    for name in list_models():
        config = json.loads((CHECKPOINTS / name / "config.json").read_text())
        rows.append({"architecture": config["display_name"], "name": name,
                     "val accuracy": config["val_accuracy_tta"], "params (M)": config["params"] / 1e6})
    return rows


def _overlaps(boxes):
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]


@pytest.mark.parametrize("rows", [zoo_rows(), zoo_rows()[:1]], ids=["eleven", "one"])
def test_zoo_plots(rows):
    for draw in (lambda r, boxes: accuracy_vs_parameters(r, boxes), lambda r, boxes: evolution(r, YEARS, boxes)):
        boxes = []
        image = draw(rows, boxes)
        assert image.mode == "RGB" and image.width >= 600 and image.height >= 400
        assert len(boxes) == len(rows), "every point is labelled"
        assert not _overlaps(boxes)


def test_zoo_plots_take_a_dataframe_and_skip_what_they_cannot_plot():
    pandas = pytest.importorskip("pandas")
    rows = zoo_rows()
    frame = pandas.DataFrame(rows + [{"architecture": "Untrained", "name": "x", "val accuracy": None,
                                      "params (M)": 1.0}])
    boxes = []
    accuracy_vs_parameters(frame, boxes)
    assert len(boxes) == len(rows)
    boxes = []
    evolution(frame, {k: v for k, v in YEARS.items() if k != "vgg"}, boxes)
    assert len(boxes) == len(rows) - 1


def test_zoo_plots_of_an_empty_table_are_placeholders():
    for image in (accuracy_vs_parameters([]), evolution([], YEARS), evolution(zoo_rows(), {})):
        assert isinstance(image, Image.Image) and image.mode == "RGB"


def test_paper_years_skips_architectures_without_one():
    years = paper_years(list_models() + ["not_a_model"])
    assert "not_a_model" not in years
    assert set(years) == set(list_models())  # every architecture of the zoo names its paper's year
    assert all(isinstance(year, int) and 1980 <= year <= 2030 for year in years.values())
