"""What a model costs, counted rather than timed: multiply-accumulates of one forward pass."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

try:  # FlopCounterMode's dispatch mode alone (torch is pinned; the public mode is the fallback)
    from torch.utils.flop_counter import _FlopCounterMode
except ImportError:  # pragma: no cover - another torch
    _FlopCounterMode = None


def count_macs(model: torch.nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one forward pass on one image (torch.utils.flop_counter counts 2 per MAC).

    Counted by FlopCounterMode's dispatch mode alone, which stays in this thread: entering FlopCounterMode itself
    also starts a ModuleTracker, whose forward hooks are global to the process and reach every model other
    threads run meanwhile (a server's explanations: Captum's autograd.grad then refuses its input, pytorch#131753).
    """
    counter = FlopCounterMode(display=False)
    with _FlopCounterMode(counter) if _FlopCounterMode is not None else counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops() // 2
