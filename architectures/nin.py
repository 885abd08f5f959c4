"""Network in Network (NIN).

Lin, Chen and Yan, "Network In Network" (ICLR 2014). Each "mlpconv" block is a spatial convolution
followed by 1x1 convolutions, a small MLP slid over every pixel; the last block outputs one map per class
and global average pooling turns the maps into logits, with no fully connected layers at all.
BatchNorm is added after each convolution, as modern CIFAR re-implementations do.
"""
from __future__ import annotations

import torch.nn as nn

from ._blocks import ConvBNAct, ZooModel, init_weights
from ._registry import register_model


def mlpconv(in_channels, width, out_channels, kernel_size):
    """One spatial convolution, then two 1x1 convolutions (the per-pixel MLP)."""
    return nn.Sequential(
        ConvBNAct(in_channels, width, kernel_size),
        ConvBNAct(width, width, 1),
        ConvBNAct(width, out_channels, 1),
    )


@register_model("nin")
class NIN(ZooModel):
    display_name = "Network in Network"
    key_idea = ("1x1 convolutions act as a small MLP at every pixel (mlpconv), and global average pooling of "
                "one map per class replaces the fully connected classifier, cutting parameters and making "
                "each final map a class-confidence map.")
    paper = "https://arxiv.org/abs/1312.4400"
    year = 2014
    seed_accuracy = 71.0
    goal_accuracy = 91.0
    # The shipped checkpoint's only stage.
    recipe = {"epochs": 79, "batch_size": 512, "lr": 0.2, "cutout": 8}
    recipe_accuracy = 89.04  # model alone, validation split, one run: the last epoch of its log.jsonl

    def __init__(self, num_classes=10, widths=(96, 192, 192), dropout=0.1):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            mlpconv(3, w1, w1, 5), nn.MaxPool2d(3, 2, padding=1), nn.Dropout(dropout),   # 16x16
            mlpconv(w1, w2, w2, 3), nn.MaxPool2d(3, 2, padding=1), nn.Dropout(dropout),  # 8x8
            ConvBNAct(w2, w3, 3), ConvBNAct(w3, w3, 1),
        )
        # The third mlpconv's last 1x1 layer maps to one channel per class: NIN's classifier.
        self.class_maps = nn.Conv2d(w3, num_classes, 1)
        self.cam_layers = ("features.0", "features.3", "features.7")
        init_weights(self)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, features):
        return self.class_maps(features).mean((2, 3))
