"""Reference PyTorch models with every parameter random, for the interop tests.

Libraries initialise biases and LayerNorm β to 0 and γ to 1, which would hide a missing or an
extra norm, or a swapped bias; so every parameter is re-drawn here.
"""

import torch
from torch import nn


def randomise(model, generator, fan_in=lambda name, p: p.shape[1]):
    """γ ∈ [0.5, 1.5]; β and biases ~ N(0, 0.5²); embeddings ~ N(0, 1); weight matrices
    ~ N(0, 1/fan_in), ``fan_in(name, p)`` defaulting to ``nn.Linear``'s ``(out, in)`` layout.
    A parameter shared by several modules (tied embeddings) is drawn once."""
    with torch.no_grad():
        norms = {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm)}
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        for name, p in model.named_parameters():
            if id(p) in norms:
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
            elif p.ndim == 1:
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))
            elif id(p) in embeddings:
                p.copy_(torch.randn(p.shape, generator=generator))
            else:
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in(name, p) ** 0.5)
