"""Decoders and observation likelihoods p(x | z_b, z_p)."""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .effect import SparseEffects
from .mlp import Projected, SplitInputMLP


def nb_log_prob(x: Tensor, mu: Tensor, log_theta: Tensor, eps: float = 1e-8) -> Tensor:
    """Negative binomial log-likelihood with mean ``mu`` and inverse dispersion ``exp(log_theta)``."""
    theta = log_theta.exp()
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        theta * (log_theta - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1.0)
    )


class Decoder(nn.Module):
    """Residual LeakyReLU MLP on ``[z_b ; z_p ; q e_qc ; covariates]`` with a count or Gaussian head.

    ``likelihood="nb"``: mean = library size x softmax(logits), per-gene inverse dispersion
    (GPO-VAE's library NB). ``likelihood="normal"``: per-gene mean and a learned per-gene scale,
    for log-normalised input.

    Shapes: z_b ``[P, N, L]``, z_p ``[P, C, V]``, index ``[N]``, library ``[N]``, artifact
    ``[P, N, L]`` or None (the artifact-free path), covariates ``[N, K]`` or None. z_p may be
    given as :class:`~grnvae.nn.mlp.Projected` (``project_effect``).
    """

    def __init__(self, latent_dim: int, n_nodes: int, n_genes: int, hidden: int, layers: int,
                 likelihood: str = "nb", artifact: bool = False, n_covariates: int = 0):
        super().__init__()
        self.likelihood = likelihood
        dims = [latent_dim, n_nodes, latent_dim if artifact else 0, n_covariates]
        self.mlp = SplitInputMLP(dims, hidden, max(layers, 1))
        self.head = nn.Linear(hidden, n_genes)
        if likelihood == "nb":
            self.log_theta = nn.Parameter(torch.full((n_genes,), 2.0))
        elif likelihood == "normal":
            self.log_scale = nn.Parameter(torch.zeros(n_genes))
        else:
            raise ValueError(f"unknown likelihood {likelihood!r}")

    def project_effect(self, z_p: Union[Tensor, SparseEffects]) -> Projected:
        """Effects ``[P, C, V]`` through the first layer, to pass as ``z_p`` (see ``SplitInputMLP``)."""
        return self.mlp.project(1, z_p)

    def mean(self, z_b: Tensor, z_p: Tensor, index: Tensor, library: Tensor,
             artifact: Optional[Tensor] = None, covariates: Optional[Tensor] = None) -> Tensor:
        """Expected observation ``[P, N, G]`` (counts for nb, values for normal)."""
        out = self.head(self.mlp([z_b, (z_p, index), artifact, covariates]))
        if self.likelihood == "nb":
            return library.unsqueeze(-1) * F.softmax(out, dim=-1)
        return out

    def log_prob(self, x: Tensor, z_b: Tensor, z_p: Tensor, index: Tensor, library: Tensor,
                 artifact: Optional[Tensor] = None, covariates: Optional[Tensor] = None) -> Tensor:
        """log p(x | z) summed over genes: ``[P, N]``."""
        mean = self.mean(z_b, z_p, index, library, artifact, covariates)
        if self.likelihood == "nb":
            return nb_log_prob(x, mean, self.log_theta).sum(-1)
        scale = self.log_scale.exp() + 1e-4
        return torch.distributions.Normal(mean, scale).log_prob(x).sum(-1)
