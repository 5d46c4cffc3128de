"""Basal-state encoders q(z_b | x, z_p)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .mlp import SplitInputMLP


class BasalEncoder(nn.Module):
    """Normal posterior over the basal latent z_b.

    ``correlated`` (GPO-VAE): an MLP on ``[log-standardised x ; z_p]`` where z_p is the cell's
    sampled latent perturbation effect; ``mean_field``: x alone.

    Shapes: x ``[N, G]``, z_p ``[P, C, V]``, index ``[N]`` -> loc, scale ``[P, N, L]``.
    """

    def __init__(self, n_genes: int, n_nodes: int, latent_dim: int, hidden: int, layers: int,
                 kind: str = "correlated"):
        super().__init__()
        self.kind = kind
        self.mlp = SplitInputMLP(n_genes, n_nodes if kind == "correlated" else 0, hidden, max(layers, 1))
        self.loc = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def forward(self, x: Tensor, z_p: Optional[Tensor], index: Tensor, particles: int) -> Tuple[Tensor, Tensor]:
        h = self.mlp(x, z_p if self.kind == "correlated" else None, index)
        if h.dim() == 2:
            h = h.unsqueeze(0).expand(particles, -1, -1)
        loc = self.loc(h)
        scale = torch.exp(0.5 * self.logvar(h).clamp(-15.0, 15.0)) + 1e-4
        return loc, scale
