"""Blocks shared by several architectures, written once.

``SqueezeExcite`` is the one squeeze-and-excitation module of the zoo (SENet and EfficientNet both use
it); its sigmoid is the named submodule ``gate``, so a forward hook on ``*.gate`` reads the channel
excitations without touching ``forward``.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class ConvBNAct(nn.Sequential):
    """Convolution, optional BatchNorm, optional activation: the unit most CNNs are stacked from."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1,
                 norm=True, act: type[nn.Module] | None = nn.ReLU, padding=None):
        padding = kernel_size // 2 if padding is None else padding
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        if act is not None:
            # Not in-place: Grad-CAM hooks read activations, and in-place ops overwrite what autograd saved.
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze (global average pool) and excitation (two 1x1 "FC" layers and a sigmoid gate).

    Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507.
    The gate output (B x C x 1 x 1, values in (0, 1)) rescales each channel of the input.
    """

    def __init__(self, channels: int, reduced_channels: int, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced_channels, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(reduced_channels, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean((2, 3), keepdim=True)
        excitation = self.gate(self.fc2(self.act(self.fc1(squeezed))))
        return x * excitation


class ClassifierHead(nn.Module):
    """Global average pooling, dropout and one linear layer: the head of most modern CNNs."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(features.mean((2, 3))))


def init_weights(model: nn.Module) -> None:
    """He initialisation for convolutions and linear layers, the usual for ReLU-family networks."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out" if isinstance(module, nn.Conv2d) else "fan_in",
                                    nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class ZooModel(nn.Module):
    """The interface every model of the zoo has.

    ``forward_features`` returns the last spatial feature map (B x C x H x W) and ``forward_head`` turns
    it into logits. ``cam_layers`` names the modules Grad-CAM may hook, shallow to deep; the last one is
    the default.

    The architecture's own facts travel with its class, so a new model is one file:

    - ``display_name``, ``key_idea``, ``paper`` (a link), ``year`` (of that paper's publication): the app's
      architecture card and the README.
    - ``seed_accuracy``: the seed project's validation accuracy, percent, after 10 epochs at 224 px (from its
      README); None where it had no such model. ``goal_accuracy``: the percent this zoo aims at, near the best
      public CIFAR-10 results of the family (issue #5).
    - ``recipe``: the default training recipe, as ``TrainConfig`` field overrides over
      ``train.recipes.BASE``: the first stage of the shipped checkpoint, so ``python -m train --arch NAME``
      trains what that stage trained. ``recipe_accuracy``: the validation accuracy (percent, model alone, no
      test-time augmentation) that one run of the recipe reached; None where no run of it is on record.
    """

    cam_layers: tuple[str, ...] = ()
    display_name: str = ""
    key_idea: str = ""
    paper: str = ""
    year: int | None = None
    seed_accuracy: float | None = None
    goal_accuracy: float | None = None
    recipe: dict = {}  # read, never mutated: train.recipes.recipe_for copies it over BASE
    recipe_accuracy: float | None = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def default_cam_layer(self) -> str:
        return self.cam_layers[-1]

    def cam_reshape(self, activations: torch.Tensor) -> torch.Tensor:
        """Turn a hooked layer's output into B x C x H x W; identity for convolutional layers."""
        return activations
