"""GoogLeNet (Inception v1), sized for CIFAR.

Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015). An Inception module runs four branches in
parallel, 1x1, 1x1 then 3x3, 1x1 then 5x5 (two 3x3 here, as Inception v2 does), and 3x3 max-pool then
1x1, and concatenates them: the network chooses its receptive field per channel, while 1x1 bottlenecks
keep the cost down.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._blocks import ClassifierHead, ConvBNAct, ZooModel, init_weights
from ._registry import register_model


class Inception(nn.Module):
    """Four parallel branches whose outputs are concatenated along channels."""

    def __init__(self, in_channels, c1x1, c3x3_reduce, c3x3, c5x5_reduce, c5x5, pool_proj):
        super().__init__()
        self.branch1 = ConvBNAct(in_channels, c1x1, 1)
        self.branch3 = nn.Sequential(ConvBNAct(in_channels, c3x3_reduce, 1), ConvBNAct(c3x3_reduce, c3x3, 3))
        self.branch5 = nn.Sequential(ConvBNAct(in_channels, c5x5_reduce, 1), ConvBNAct(c5x5_reduce, c5x5, 3),
                                     ConvBNAct(c5x5, c5x5, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), ConvBNAct(in_channels, pool_proj, 1))
        self.out_channels = c1x1 + c3x3 + c5x5 + pool_proj

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


# Inception settings (c1x1, c3x3_reduce, c3x3, c5x5_reduce, c5x5, pool_proj) per stage: GoogLeNet's own
# (table 1 of the paper), which ``width`` scales. Six of its nine modules: 4c, 4d and 5a are left out on
# 32x32 images. Each stage starts with 2x2 max-pooling: like GoogLeNet's stem, the 32x32 stem output is
# downsampled before the first Inception module.
INCEPTION_STAGES = (
    ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)),                               # 16x16: 3a, 3b
    ((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (256, 160, 320, 32, 128, 128),
     (384, 192, 384, 48, 128, 128)),                                                        # 8x8: 4a, 4b, 4e, 5b
)


@register_model("googlenet")
class GoogLeNet(ZooModel):
    display_name = "GoogLeNet (Inception v1)"
    key_idea = ("Inception modules run 1x1, 3x3, 5x5 and pooling branches side by side and concatenate them, so "
                "each layer mixes several receptive fields; 1x1 bottlenecks keep it cheap. It beat VGG with "
                "a tenth of the parameters.")
    paper = "https://arxiv.org/abs/1409.4842"
    year = 2015
    seed_accuracy = 80.3
    goal_accuracy = 93.0
    # The shipped checkpoint's first stage (stages[0] of its config.json); later stages fine-tuned it.
    recipe = {"epochs": 28, "batch_size": 512, "lr": 0.4, "cutout": 8}
    recipe_accuracy = 88.78  # model alone, validation split, one run: that stage's figure

    # Half GoogLeNet's width: at a quarter it plateaued well short of its goal on CIFAR-10.
    def __init__(self, num_classes=10, width=0.5, stem_width=64, dropout=0.2):
        super().__init__()
        self.stem = ConvBNAct(3, stem_width, 3)
        blocks, in_channels = [], stem_width
        for settings in INCEPTION_STAGES:
            blocks.append(nn.MaxPool2d(2))
            for setting in settings:
                module = Inception(in_channels, *(max(1, round(channels * width)) for channels in setting))
                blocks.append(module)
                in_channels = module.out_channels
        self.inceptions = nn.Sequential(*blocks)
        self.head = ClassifierHead(in_channels, num_classes, dropout)
        modules = [i for i, block in enumerate(self.inceptions) if isinstance(block, Inception)]
        self.cam_layers = tuple(f"inceptions.{i}" for i in modules[-4:])
        init_weights(self)

    def forward_features(self, x):
        return self.inceptions(self.stem(x))

    def forward_head(self, features):
        return self.head(features)
