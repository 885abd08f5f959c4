"""What one forward pass of a model costs, counted rather than timed (the zoo table, the app, bench/)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: torch.nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image (torch.utils.flop_counter counts 2 per MAC)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops() // 2
