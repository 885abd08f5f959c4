"""VGG: depth from stacks of small 3x3 convolutions.

Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition" (ICLR 2015).
Two stacked 3x3 convolutions see as far as one 5x5 with fewer weights and an extra non-linearity; the
network is nothing but such stacks and max-pooling. This is the CIFAR form with BatchNorm (vgg_bn),
at reduced width so the checkpoint fits a Space.
"""
from __future__ import annotations

import torch.nn as nn

from ._blocks import ClassifierHead, ConvBNAct, ZooModel, init_weights
from ._registry import register_model

# A VGG variant is a list of stages: the number of 3x3 convolutions and their width, then a max-pool.
# Names count weight layers (convolutions plus the linear head). On 32x32 inputs four pooled stages
# already reach a 4x4 map, so the CIFAR variants drop ImageNet VGG's fifth stage.
VGG_STAGES = {
    "vgg9": ((2, 64), (2, 128), (2, 256), (2, 512)),
    "vgg11": ((2, 64), (2, 128), (3, 256), (3, 512)),
}


@register_model("vgg")
class VGG(ZooModel):
    display_name = "VGG"
    key_idea = ("Only 3x3 convolutions, stacked two or three deep between poolings: small kernels in series "
                "see as far as large ones with fewer weights and more non-linearity. Depth, not kernel size, "
                "buys accuracy.")
    paper = "https://arxiv.org/abs/1409.1556"

    def __init__(self, num_classes=10, variant="vgg9", width_multiplier=0.5, dropout=0.0):
        super().__init__()
        if variant not in VGG_STAGES:
            raise ValueError(f"unknown VGG variant {variant!r}; known: {', '.join(VGG_STAGES)}")
        layers, in_channels = [], 3
        for depth, width in VGG_STAGES[variant]:
            width = int(width * width_multiplier)
            for _ in range(depth):
                layers.append(ConvBNAct(in_channels, width, 3))
                in_channels = width
            layers.append(nn.MaxPool2d(2))
        layers.pop()  # no pooling after the last stage: its 4x4 map goes to the head and to Grad-CAM
        self.features = nn.Sequential(*layers)
        self.head = ClassifierHead(in_channels, num_classes, dropout)
        convs = [i for i, layer in enumerate(self.features) if isinstance(layer, ConvBNAct)]
        self.cam_layers = tuple(f"features.{i}" for i in convs[-4:])
        init_weights(self)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, features):
        return self.head(features)
