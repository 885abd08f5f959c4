"""ResNet for CIFAR (ResNet-20/32/56 family).

He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016), section 4.2: three
stages of basic blocks at 16, 32 and 64 channels on 32x32, 16x16 and 8x8 maps. Each block adds its input
to its output through an identity skip connection, so a block only learns a residual and gradients reach
early layers undiminished. ``width`` sets the first stage's channels (wide-ResNet style): the default, 32,
is ResNet-20 at twice the paper's width (WRN-20-2); the paper's 16 channels fell short of the zoo's goal.
"""
from __future__ import annotations

import torch.nn as nn

from ._blocks import ClassifierHead, ConvBNAct, SqueezeExcite, ZooModel, init_weights
from ._registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus the identity (or a 1x1 projection where the shape changes).

    ``se_reduction`` > 0 adds squeeze-and-excitation on the residual branch before the addition,
    exactly where SENet puts it (this is how ``senet`` reuses the block).
    """

    def __init__(self, in_channels, out_channels, stride=1, se_reduction=0):
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, 3, stride)
        self.conv2 = ConvBNAct(out_channels, out_channels, 3, act=None)
        self.se = SqueezeExcite(out_channels, max(out_channels // se_reduction, 4)) if se_reduction else nn.Identity()
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else ConvBNAct(in_channels, out_channels, 1, stride, act=None))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.se(self.conv2(self.conv1(x))) + self.shortcut(x))


class CifarResNet(ZooModel):
    """3 stages x ``blocks_per_stage`` basic blocks; depth = 6 * blocks_per_stage + 2."""

    def __init__(self, num_classes=10, blocks_per_stage=3, width=16, se_reduction=0):
        super().__init__()
        self.stem = ConvBNAct(3, width, 3)
        blocks, in_channels = [], width
        for stage in range(3):
            out_channels = width * 2 ** stage
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride, se_reduction))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = ClassifierHead(in_channels, num_classes)
        # Last block of each stage (32x32, 16x16, 8x8), then the block before the last.
        n = blocks_per_stage
        self.cam_layers = (f"blocks.{n - 1}", f"blocks.{2 * n - 1}", f"blocks.{3 * n - 2}", f"blocks.{3 * n - 1}")
        init_weights(self)
        for block in self.blocks:  # zero-init the last BN of each branch: every block starts as the identity
            nn.init.zeros_(block.conv2[1].weight)

    def forward_features(self, x):
        return self.blocks(self.stem(x))

    def forward_head(self, features):
        return self.head(features)


@register_model("resnet")
class ResNet(CifarResNet):
    display_name = "ResNet"
    key_idea = ("Each block adds its input back to its output (an identity skip connection), so it only learns "
                "a correction. Gradients flow straight through the shortcuts, which made networks of 100+ "
                "layers trainable.")
    paper = "https://arxiv.org/abs/1512.03385"
    year = 2016
    seed_accuracy = 74.9
    goal_accuracy = 93.0
    # The shipped checkpoint's first stage (stages[0] of its config.json); later stages fine-tuned it.
    recipe = {"epochs": 74, "batch_size": 512, "lr": 0.4, "cutout": 8}
    recipe_accuracy = 90.36  # model alone, validation split, one run: that stage's figure

    def __init__(self, num_classes=10, blocks_per_stage=3, width=32):
        super().__init__(num_classes, blocks_per_stage, width, se_reduction=0)
