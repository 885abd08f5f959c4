"""EfficientNet, its B0 layout adapted to 32x32 inputs.

Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (ICML 2019).
The network is a stack of MBConv blocks (1x1 expansion, depthwise convolution, squeeze-and-excitation,
1x1 projection, swish activations, a skip connection where shapes allow). One compound coefficient scales
width and depth together; here ``width_mult`` and ``depth_mult`` set them. For CIFAR the stem keeps
stride 1 and the sixth stage does not downsample, so 32x32 ends as a 4x4 map (B0 on 224 ends at 7x7).
"""
from __future__ import annotations

import math

import torch.nn as nn

from ._blocks import ClassifierHead, ConvBNAct, SqueezeExcite, ZooModel, init_weights
from ._registry import register_model

# EfficientNet-B0 stages: (expand ratio, channels, repeats, stride, kernel). Strides adapted to 32x32.
B0_STAGES = (
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 1, 5),
    (6, 320, 1, 1, 3),
)


def round_channels(channels: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor`` without dropping more than 10%, as the reference code does."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class MBConv(nn.Module):
    """Inverted residual: expand (1x1), depthwise (k x k), squeeze-excite, project (1x1), skip."""

    def __init__(self, in_channels, out_channels, expand_ratio, kernel_size, stride, se_ratio=0.25):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = ConvBNAct(in_channels, hidden, 1, act=nn.SiLU) if expand_ratio != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, act=nn.SiLU)
        self.se = SqueezeExcite(hidden, max(1, int(in_channels * se_ratio)), act=nn.SiLU)
        self.project = ConvBNAct(hidden, out_channels, 1, act=None)
        self.use_skip = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return out + x if self.use_skip else out


@register_model("efficientnet")
class EfficientNet(ZooModel):
    display_name = "EfficientNet"
    key_idea = ("Built from MBConv blocks: a cheap depthwise convolution between 1x1 expansion and projection, "
                "with squeeze-and-excitation and swish. Width, depth and resolution are scaled together by one "
                "coefficient instead of one at a time.")
    paper = "https://arxiv.org/abs/1905.11946"
    year = 2019
    seed_accuracy = None
    goal_accuracy = 90.0
    # The shipped checkpoint's first stage (stages[0] of its config.json); later stages fine-tuned it.
    # Its weight decay, 1e-4, is the one its recipe had then (the other nets' is 5e-4): the stage's command
    # lists only what differed from that recipe.
    recipe = {"epochs": 54, "batch_size": 512, "lr": 0.4, "weight_decay": 1e-4}
    recipe_accuracy = 84.96  # model alone, validation split, one run: that stage's figure

    def __init__(self, num_classes=10, width_mult=0.5, depth_mult=0.5, head_channels=640, dropout=0.2):
        super().__init__()
        stem_channels = round_channels(32 * width_mult)
        self.stem = ConvBNAct(3, stem_channels, 3, act=nn.SiLU)
        blocks, in_channels = [], stem_channels
        for expand, channels, repeats, stride, kernel in B0_STAGES:
            out_channels = round_channels(channels * width_mult)
            for index in range(math.ceil(repeats * depth_mult)):
                blocks.append(MBConv(in_channels, out_channels, expand, kernel, stride if index == 0 else 1))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = ConvBNAct(in_channels, head_channels, 1, act=nn.SiLU)
        self.head = ClassifierHead(head_channels, num_classes, dropout)
        n = len(blocks)
        # The late maps are 4x4; the 16x16 blocks.1 is where LayerCAM passes the deletion check (tests/test_explain.py).
        self.cam_layers = ("blocks.1", "blocks.2", f"blocks.{n - 1}", "head_conv")
        init_weights(self)

    def forward_features(self, x):
        return self.head_conv(self.blocks(self.stem(x)))

    def forward_head(self, features):
        return self.head(features)
