"""VGG: depth from stacks of small 3x3 convolutions.

Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition" (ICLR 2015).
Two stacked 3x3 convolutions see as far as one 5x5 with fewer weights and an extra non-linearity; the
network is nothing but such stacks and max-pooling. This is the CIFAR form with BatchNorm (vgg_bn),
at reduced width so the checkpoint fits a Space.
"""
from __future__ import annotations

from ._registry import register_model
from .basic_convnet import PlainConvNet

# A VGG variant is a list of stages: the number of 3x3 convolutions and their width, then a max-pool.
# Names count weight layers (convolutions plus the linear head). On 32x32 inputs four pooled stages
# already reach a 4x4 map, so the CIFAR variants drop ImageNet VGG's fifth stage.
VGG_STAGES = {
    "vgg9": ((2, 64), (2, 128), (2, 256), (2, 512)),
    "vgg11": ((2, 64), (2, 128), (3, 256), (3, 512)),
}


@register_model("vgg")
class VGG(PlainConvNet):
    display_name = "VGG"
    key_idea = ("Only 3x3 convolutions, stacked two or three deep between poolings: small kernels in series "
                "see as far as large ones with fewer weights and more non-linearity. Depth, not kernel size, "
                "buys accuracy.")
    paper = "https://arxiv.org/abs/1409.1556"
    year = 2015
    seed_accuracy = 75.9
    goal_accuracy = 93.0
    # The shipped checkpoint's first stage without its teachers: that stage also distilled from earlier
    # checkpoints (--teacher checkpoints/vgg,checkpoints/bn_convnet,checkpoints/resnet,checkpoints/senet),
    # which a default cannot name since they must exist first. Its --arch-args width_multiplier 0.75 is the
    # class default. No run of the recipe without teachers is on record, so no accuracy is claimed for it;
    # the distilled stage's figure is in the checkpoint's config (stages[0]).
    recipe = {"epochs": 57, "batch_size": 512, "lr": 0.4, "cutout": 8}
    recipe_accuracy = None

    def __init__(self, num_classes=10, variant="vgg9", width_multiplier=0.75, dropout=0.0):
        if variant not in VGG_STAGES:
            raise ValueError(f"unknown VGG variant {variant!r}; known: {', '.join(VGG_STAGES)}")
        stages = [(depth, int(width * width_multiplier)) for depth, width in VGG_STAGES[variant]]
        # No pooling after the last stage: its 4x4 map goes to the head and to Grad-CAM.
        super().__init__(num_classes, stages, norm=True, dropout=dropout, cam_depths=4)
