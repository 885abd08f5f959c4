"""SENet: ResNet whose residual branches are rescaled channel by channel by squeeze-and-excitation.

Hu, Shen and Sun, "Squeeze-and-Excitation Networks" (CVPR 2018). Each block squeezes its feature map to
one number per channel (global average pooling), passes that through two small FC layers and a sigmoid
(the excitation), and multiplies the channels by the result before the skip connection is added. Built
as SE-ResNet on the CIFAR ResNet of ``resnet.py``, with the zoo's shared ``SqueezeExcite`` module.
"""
from __future__ import annotations

from ._registry import register_model
from .resnet import CifarResNet


@register_model("senet")
class SENet(CifarResNet):
    display_name = "SENet (SE-ResNet)"
    key_idea = ("A squeeze-and-excitation block summarises each channel by its global average, then a tiny "
                "two-layer network with a sigmoid decides how much to turn each channel up or down. Channel "
                "attention for about 1% extra cost; it won ImageNet 2017.")
    paper = "https://arxiv.org/abs/1709.01507"
    year = 2018
    seed_accuracy = 83.4
    goal_accuracy = 93.5
    # The shipped checkpoint's only stage.
    recipe = {"epochs": 55, "batch_size": 512, "lr": 0.4, "cutout": 8}
    recipe_accuracy = 90.52  # model alone, validation split, one run: the last epoch of its log.jsonl

    def __init__(self, num_classes=10, blocks_per_stage=3, width=32, se_reduction=4):
        super().__init__(num_classes, blocks_per_stage, width, se_reduction)
