"""DenseNet-BC for CIFAR.

Huang, Liu, van der Maaten and Weinberger, "Densely Connected Convolutional Networks" (CVPR 2017).
Inside a dense block every layer receives the concatenation of all earlier layers' outputs and adds
``growth_rate`` new channels; transition layers (1x1 convolution that halves the channels, then 2x2
average pooling) sit between blocks. "BC" = bottleneck 1x1 layers and compression at transitions.
Like ImageNet DenseNet's stem (and unlike the paper's CIFAR form), the stem downsamples once, to
16x16: concatenation and BatchNorm are memory-bound, and at full 32x32 they made training four times
slower on a CPU for little accuracy.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._blocks import ClassifierHead, ZooModel, init_weights
from ._registry import register_model


def bn_relu_conv(in_channels, out_channels, kernel_size):
    """DenseNet's pre-activation order: BatchNorm, ReLU, then the convolution."""
    return nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                         nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False))


class DenseLayer(nn.Module):
    """Bottleneck (1x1 to 4k channels) then 3x3 to k new channels, concatenated onto the input."""

    def __init__(self, in_channels, growth_rate):
        super().__init__()
        self.bottleneck = bn_relu_conv(in_channels, 4 * growth_rate, 1)
        self.conv = bn_relu_conv(4 * growth_rate, growth_rate, 3)

    def forward(self, x):
        return torch.cat([x, self.conv(self.bottleneck(x))], 1)


class Transition(nn.Sequential):
    def __init__(self, in_channels, out_channels):
        super().__init__(bn_relu_conv(in_channels, out_channels, 1), nn.AvgPool2d(2))


@register_model("densenet")
class DenseNet(ZooModel):
    display_name = "DenseNet-BC"
    key_idea = ("Inside a dense block each layer takes the concatenation of every earlier layer's output and adds "
                "a few new channels. Features are reused instead of relearned, so it is accurate with few "
                "parameters.")
    paper = "https://arxiv.org/abs/1608.06993"
    year = 2017
    seed_accuracy = 68.3
    goal_accuracy = 93.0
    # The shipped checkpoint's first stage (stages[0] of its config.json); later stages fine-tuned it.
    recipe = {"epochs": 41, "batch_size": 512, "lr": 0.4, "cutout": 8}
    recipe_accuracy = 89.9  # model alone, validation split, one run: that stage's figure

    def __init__(self, num_classes=10, growth_rate=24, layers_per_block=(6, 6, 6), compression=0.5):
        super().__init__()
        channels = 2 * growth_rate
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.MaxPool2d(2))
        stages = []
        for index, num_layers in enumerate(layers_per_block):
            block = []
            for _ in range(num_layers):
                block.append(DenseLayer(channels, growth_rate))
                channels += growth_rate
            stages.append(nn.Sequential(*block))
            if index < len(layers_per_block) - 1:
                out_channels = int(channels * compression)
                stages.append(Transition(channels, out_channels))
                channels = out_channels
        self.blocks = nn.Sequential(*stages)
        self.final_norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
        self.head = ClassifierHead(channels, num_classes)
        last = len(stages) - 1
        self.cam_layers = (f"blocks.{last - 2}", f"blocks.{last}", "final_norm")
        init_weights(self)

    def forward_features(self, x):
        return self.final_norm(self.blocks(self.stem(x)))

    def forward_head(self, features):
        return self.head(features)
