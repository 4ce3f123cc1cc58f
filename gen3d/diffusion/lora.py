"""Low-rank adapters for VSD's trainable copy of a frozen prior.

The copy shares every frozen weight with the original (no memory is duplicated); only the
low-rank factors are new, and they start at zero so the copy begins equal to the prior.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / rank) * B(A(x)), base frozen, B zero-initialised."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        with torch.no_grad():
            bound = 1 / base.in_features**0.5
            self.down.weight.copy_(torch.rand(self.down.weight.shape, generator=generator) * 2 * bound - bound)
            self.up.weight.zero_()
        self.scale = (alpha or rank) / rank
        self.to(base.weight.device, base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.up(self.down(x)) * self.scale


def lora_copy(net: nn.Module, rank: int = 4, generator: torch.Generator | None = None) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of `net` sharing its (frozen) weights, with every nn.Linear wrapped in a LoRA adapter."""
    shared = {id(t): t for t in list(net.parameters()) + list(net.buffers())}
    clone = copy.deepcopy(net, memo=shared)
    for p in clone.parameters():
        p.requires_grad_(False)
    params: list[nn.Parameter] = []
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                adapter = LoRALinear(child, rank, generator=generator)
                setattr(parent, name, adapter)
                params += [adapter.down.weight, adapter.up.weight]
    if not params:
        raise ValueError("the network has no nn.Linear layer to adapt")
    return clone, params
