"""AlexNet, sized for 32x32 CIFAR images.

Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep Convolutional Neural Networks"
(NeurIPS 2012). Its ideas: large early kernels (here 5x5, as in the CIFAR "cuda-convnet" nets), ReLU
instead of saturating units, overlapping max-pooling, and dropout in the fully connected classifier.
Local response normalisation, long abandoned, is replaced by BatchNorm.
"""
from __future__ import annotations

import torch.nn as nn

from ._blocks import ConvBNAct, ZooModel, init_weights
from ._registry import register_model


@register_model("alexnet")
class AlexNet(ZooModel):
    display_name = "AlexNet"
    key_idea = ("Large early filters, ReLU activations and dropout made a deep CNN trainable on GPUs and won "
                "ImageNet 2012 by a wide margin, starting the deep-learning era in vision.")
    paper = "https://papers.nips.cc/paper/2012/hash/c399862d3b9d6b76c8436e924a68c45b-Abstract.html"
    year = 2012
    seed_accuracy = 71.3
    goal_accuracy = 88.0
    # The shipped checkpoint's first stage (stages[0] of its config.json); later stages fine-tuned it.
    recipe = {"epochs": 101, "batch_size": 512, "lr": 0.2, "cutout": 8}
    recipe_accuracy = 87.66  # model alone, validation split, one run: that stage's figure

    def __init__(self, num_classes=10, widths=(64, 128, 160, 160, 96), hidden=256, dropout=0.5):
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.features = nn.Sequential(
            ConvBNAct(3, c1, 5),                          # 32x32, the large early kernel
            nn.MaxPool2d(3, 2, padding=1),                # 16x16, overlapping pooling
            ConvBNAct(c1, c2, 5),
            nn.MaxPool2d(3, 2, padding=1),                # 8x8
            ConvBNAct(c2, c3, 3),
            ConvBNAct(c3, c4, 3),
            ConvBNAct(c4, c5, 3),
        )
        self.pool = nn.MaxPool2d(2)                       # 4x4 into the dense layers
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(c5 * 16, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )
        self.cam_layers = ("features.2", "features.4", "features.6")
        init_weights(self)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, features):
        return self.classifier(self.pool(features))
