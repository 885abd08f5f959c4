"""MLP-Mixer: image classification with multi-layer perceptrons only.

Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision" (NeurIPS 2021). The image is cut into
patches, each linearly embedded (a token). Every Mixer layer has a token-mixing MLP (applied across
patches, one channel at a time: spatial mixing) and a channel-mixing MLP (applied to each patch on its
own), both with LayerNorm and skip connections. No convolutions after the patch embedding.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ._blocks import ZooModel, init_weights
from ._registry import register_model


class MLP(nn.Sequential):
    def __init__(self, dim, hidden, dropout=0.0):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class MixerBlock(nn.Module):
    """Token mixing across patches, then channel mixing within each patch; tokens are B x N x C."""

    def __init__(self, num_tokens, dim, token_hidden, channel_hidden, dropout=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = MLP(num_tokens, token_hidden, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = MLP(dim, channel_hidden, dropout)

    def forward(self, x):
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


@register_model("mlpmixer")
class MLPMixer(ZooModel):
    display_name = "MLP-Mixer"
    key_idea = ("No convolutions: the image is cut into patches, and layers alternate an MLP that mixes "
                "information across patches (spatial) with one that mixes channels within each patch. It "
                "needs more data and augmentation than a CNN to do well.")
    paper = "https://arxiv.org/abs/2105.01601"
    year = 2021
    seed_accuracy = 68.5
    goal_accuracy = 88.0
    # The shipped checkpoint's first stage (stages[0] of its config.json); later stages fine-tuned it.
    # No convolutional prior: AdamW as for transformers. The rate is 2e-3 per 256 images scaled by sqrt(2) for
    # 512 (train.recipes.lr_for_batch), as that stage ran.
    recipe = {"epochs": 31, "batch_size": 512, "lr": 0.00282843, "optimizer": "adamw", "weight_decay": 0.05,
              "warmup_epochs": 1.0}
    recipe_accuracy = 77.92  # model alone, validation split, one run: that stage's figure

    def __init__(self, num_classes=10, image_size=32, patch_size=4, dim=128, depth=6, token_hidden=64,
                 channel_hidden=256, dropout=0.0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.grid_size = image_size // patch_size
        num_tokens = self.grid_size ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)  # one linear map per patch
        self.blocks = nn.Sequential(*[MixerBlock(num_tokens, dim, token_hidden, channel_hidden, dropout)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        self.cam_layers = tuple(f"blocks.{i}" for i in range(max(0, depth - 4), depth))
        init_weights(self)
        for module in self.modules():  # transformer-style init: small normal weights for the MLPs
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(self.fc.weight)

    def cam_reshape(self, activations: torch.Tensor) -> torch.Tensor:
        """Tokens (B x N x C) to the patch grid (B x C x H x W), so CAM methods see a spatial map."""
        batch, tokens, channels = activations.shape
        return activations.transpose(1, 2).reshape(batch, channels, self.grid_size, self.grid_size)

    def forward_features(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        return self.cam_reshape(self.norm(self.blocks(tokens)))

    def forward_head(self, features):
        return self.fc(features.mean((2, 3)))
