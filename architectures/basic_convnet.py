"""A basic ConvNet: the plain stack of 3x3 convolutions, ReLUs and max-pooling that CNNs start from.

LeCun et al., "Gradient-based learning applied to document recognition" (1998) set the pattern; this is
its CIFAR-sized form with no normalisation, so training relies on careful initialisation and a modest
learning rate. ``bn_convnet`` is the same network with BatchNorm after every convolution.
"""
from __future__ import annotations

import torch.nn as nn

from ._blocks import ClassifierHead, ConvBNAct, ZooModel, init_weights
from ._registry import register_model


class PlainConvNet(ZooModel):
    """Stages of 3x3 convolutions, each stage but the last ending in 2x2 max-pooling, then a pooled head.

    ``stages`` lists (number of convolutions, width) per stage. The basic ConvNet, its BatchNorm twin and
    VGG are all this network with different stages; Grad-CAM may hook the last ``cam_depths`` convolutions.
    """

    def __init__(self, num_classes, stages, norm, dropout=0.0, cam_depths=3):
        super().__init__()
        layers, in_channels = [], 3
        for index, (depth, width) in enumerate(stages):
            for _ in range(depth):
                layers.append(ConvBNAct(in_channels, width, 3, norm=norm))
                in_channels = width
            if index < len(stages) - 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(in_channels, num_classes, dropout)
        conv_indices = [i for i, layer in enumerate(self.features) if isinstance(layer, ConvBNAct)]
        self.cam_layers = tuple(f"features.{i}" for i in conv_indices[-cam_depths:])
        init_weights(self)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, features):
        return self.head(features)


@register_model("basic_convnet")
class BasicConvNet(PlainConvNet):
    display_name = "Basic ConvNet"
    key_idea = ("Convolutions share one small filter across the whole image, and pooling shrinks the map so "
                "later layers see more of it. Stacking them learns edges, then textures, then object parts.")
    paper = "http://yann.lecun.com/exdb/publis/pdf/lecun-01a.pdf"
    # LeCun et al.'s 1998 paper (LeNet-5), the one linked: the plain ConvNet's best-known statement, though
    # the pattern dates from LeCun 1989.
    year = 1998
    seed_accuracy = None
    goal_accuracy = 85.0
    # The shipped checkpoint's first stage (stages[0] of its config.json); later stages fine-tuned it.
    # No normalisation: it diverges at the BatchNorm nets' learning rates. bf16 autocast pays on a CPU with
    # AVX512-BF16 for this net; for the others it was slower than fp32.
    recipe = {"epochs": 49, "batch_size": 512, "lr": 0.1, "cpu_bf16": True}
    recipe_accuracy = 84.0  # model alone, validation split, one run: that stage's figure

    def __init__(self, num_classes=10, widths=(32, 64, 128), convs_per_stage=2, dropout=0.0):
        super().__init__(num_classes, [(convs_per_stage, w) for w in widths], norm=False, dropout=dropout)
