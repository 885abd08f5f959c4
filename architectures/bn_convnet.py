"""The basic ConvNet with Batch Normalization after every convolution.

Ioffe and Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
Covariate Shift" (2015). Normalising each channel over the batch lets the same plain stack train with a
learning rate several times higher and reach far better accuracy in a few epochs (airbench's network is
this kind of net).
"""
from __future__ import annotations

from .basic_convnet import PlainConvNet
from ._registry import register_model


@register_model("bn_convnet")
class BNConvNet(PlainConvNet):
    display_name = "BatchNorm ConvNet"
    key_idea = ("The basic ConvNet with Batch Normalization after each convolution: every channel is "
                "re-centred and re-scaled over the batch, which keeps signals well-sized through depth and "
                "lets the network train fast with high learning rates.")
    paper = "https://arxiv.org/abs/1502.03167"
    year = 2015
    seed_accuracy = None
    goal_accuracy = 93.0
    # The shipped checkpoint's first stage (stages[0] of its config.json); later stages fine-tuned it.
    recipe = {"epochs": 111, "batch_size": 512, "lr": 0.4, "cutout": 8}
    recipe_accuracy = 89.66  # model alone, validation split, one run: that stage's figure

    def __init__(self, num_classes=10, widths=(64, 128, 256), convs_per_stage=2, dropout=0.0):
        super().__init__(num_classes, [(convs_per_stage, w) for w in widths], norm=True, dropout=dropout)
