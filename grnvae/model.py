"""GRNVAE: the GPO-VAE generative model and guide with the GRN as a sparse edge set.

Per cell: counts x (G genes), dosage d over the GRN's V nodes, basal latent z_b ~ N(0, I_L).
Global (perturbation-plated) latents: an edge mask m_e ~ Bernoulli(p_e) and weight
w_e ~ N(0, s^2) for each GRN edge. The latent perturbation effect z_p (one value per GRN node) is
computed by the effect module from d over the edges weighted by m * w, once per unique condition
of a batch; the decoder maps [z_b ; z_p] to a negative-binomial (counts) or Normal
(log-normalised) likelihood. The loss is the negative plated ELBO plus the GRN alignment loss
(K-hop accumulated edge logits against |Delta x| - fc, by sparse propagation) and a sparsity
penalty on the edge probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from .grn import GRN
from .nn.edges import EdgePosterior, normal_kl
from .nn.effect import EffectModule, khop_rows
from .nn.encoders import BasalEncoder
from .nn.likelihoods import Decoder


@dataclass
class ModelSpec:
    """Everything about the data a model needs to be rebuilt without the data.

    Stored in every checkpoint, so a run can be loaded (``Run.load``) from its directory alone.
    Tensors: ``edge_index`` ``[2, E]``, ``mask_prior`` ``[E]``, ``x_mean``/``x_std`` ``[G]``,
    ``node_counts`` ``[V]`` (training cells with a non-zero dosage on each node).
    """

    genes: List[str]
    nodes: List[str]
    edge_index: Tensor
    node_gene: List[int]  # gene column of each node, -1 when the node is not measured
    x_mean: Tensor
    x_std: Tensor
    node_counts: Tensor
    n_train: int
    values: str  # "counts" or "lognorm"
    mask_prior: Optional[Tensor] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelSpec":
        return cls(**d)

    @property
    def grn(self) -> GRN:
        return GRN(self.nodes, self.edge_index, name="model")


class GRNVAE(nn.Module):
    """The model: edge posterior + effect module + basal encoder + decoder + loss terms.

    Build it with :meth:`from_recipe`; ``forward(batch, particles)`` returns a dict of loss
    terms whose ``"loss"`` entry is optimised.

    Batch keys (tensors): ``x`` ``[N, G]``, ``library`` ``[N]``, ``cond_index`` ``[N]`` (row of
    ``cond_dosage``), ``cond_dosage`` ``[C, V]``, ``delta`` ``[N, Vm]`` (|Delta x| on measured
    nodes), ``has_delta`` ``[N]`` (perturbed cells with a matched control).
    """

    def __init__(self, spec: ModelSpec, cfg) -> None:
        super().__init__()
        self.spec = spec
        mcfg, lcfg = cfg.model, cfg.loss
        G, V = len(spec.genes), len(spec.nodes)
        self.n_genes, self.num_nodes = G, V
        self.values = spec.values
        likelihood = mcfg.decoder.likelihood
        if likelihood == "auto":
            likelihood = "nb" if spec.values == "counts" else "normal"
        self.likelihood = likelihood

        self.register_buffer("edge_index", spec.edge_index.long().clone())
        self.register_buffer("x_mean", spec.x_mean.float().clone())
        self.register_buffer("x_std", spec.x_std.float().clone())
        self.register_buffer("node_counts", spec.node_counts.float().clone())
        node_gene = torch.as_tensor(spec.node_gene, dtype=torch.long)
        self.register_buffer("measured_nodes", torch.nonzero(node_gene >= 0).flatten())
        self.n_train = int(spec.n_train)

        ecfg = mcfg.edges
        self.edges = EdgePosterior(
            self.edge_index, V,
            mask_prior=spec.mask_prior if spec.mask_prior is not None else ecfg.mask_prior,
            logit_init=ecfg.logit_init, weight=ecfg.weight,
            weight_prior_scale=ecfg.weight_prior_scale, temperature=ecfg.temperature,
            encoder_layers=ecfg.encoder_layers, encoder_hidden=ecfg.encoder_hidden,
        )
        self.effect = EffectModule(mcfg.effect.layer, mcfg.effect.hops, mcfg.effect.combine)
        L = mcfg.latent_dim
        self.latent_dim = L
        self.encoder = BasalEncoder(G, V, L, mcfg.encoder.hidden, mcfg.encoder.layers, mcfg.encoder.kind)
        self.decoder = Decoder(L, V, G, mcfg.decoder.hidden, mcfg.decoder.layers, likelihood)

        self.kl_weight = float(lcfg.kl_weight)
        self.align_weight = float(lcfg.align.weight)
        self.align_hops = int(lcfg.align.hops)
        self.align_fc = float(lcfg.align.fc)
        self.sparsity = float(lcfg.sparsity)

    # ---------------------------------------------------------------------------------------
    def standardise(self, x: Tensor) -> Tensor:
        """Encoder input: log1p counts (or log-normalised values) standardised per gene."""
        if self.values == "counts":
            x = torch.log1p(x)
        return (x - self.x_mean) / self.x_std

    def effects(self, cond_dosage: Tensor, particles: int):
        """Sample the GRN and compute latent effects per condition.

        Returns (z_p ``[P, C, V]``, per-edge KL ``[E]``).
        """
        edge_weight, edge_kl, _ = self.edges.sample(particles)
        return self.effect(cond_dosage, self.edge_index, edge_weight), edge_kl

    def plated_kl(self, edge_kl: Tensor, cond_dosage: Tensor, cond_index: Tensor) -> Tensor:
        """Each cell's share of the global KL: ``[N]``.

        A regulator's edges are perturbation-plated: every training cell in which the regulator
        is perturbed carries 1/N_i of the KL of its out-edges. Edges of regulators never
        perturbed in training are shared by all N_train cells. Summed over an epoch, every
        global KL counts once.
        """
        row_kl = scatter(edge_kl, self.edge_index[0], dim=0, dim_size=self.num_nodes, reduce="sum")
        counts = self.node_counts
        seen = counts > 0
        per_node = torch.where(seen, row_kl / counts.clamp(min=1.0), torch.zeros_like(row_kl))
        share = (cond_dosage != 0).to(row_kl.dtype) @ per_node  # [C]
        orphan = row_kl[~seen].sum() / max(self.n_train, 1)
        return share[cond_index] + orphan

    def alignment(self, batch: Dict[str, Tensor]) -> Tensor:
        """GRN alignment: L1 between K-hop accumulated edge logits and |Delta x| - fc."""
        has = batch["has_delta"]
        if self.align_weight == 0 or self.measured_nodes.numel() == 0 or not bool(has.any()):
            return self.edges.logits.new_zeros(())
        rows = khop_rows(batch["cond_dosage"], self.edge_index, self.edges.logits, self.num_nodes, self.align_hops)
        pred = rows[batch["cond_index"][has]][:, self.measured_nodes]
        target = batch["delta"][has] - self.align_fc
        return self.align_weight * (pred - target).abs().mean()

    def forward(self, batch: Dict[str, Tensor], particles: int = 1) -> Dict[str, Tensor]:
        x, idx = batch["x"], batch["cond_index"]
        z_p, edge_kl = self.effects(batch["cond_dosage"], particles)
        loc, scale = self.encoder(self.standardise(x), z_p, idx, particles)
        z_b = loc + scale * torch.randn_like(loc)
        log_lik = self.decoder.log_prob(x, z_b, z_p, idx, batch["library"]).mean(0)  # [N]
        kl_local = normal_kl(loc, scale, 1.0).sum(-1).mean(0)  # [N]
        kl_global = self.plated_kl(edge_kl, batch["cond_dosage"], idx)  # [N]
        terms = {
            "reconstruction": -log_lik.mean(),
            "kl_local": kl_local.mean(),
            "kl_global": kl_global.mean(),
            "align": self.alignment(batch),
            "sparsity": self.sparsity * self.edges.probabilities().mean(),
        }
        terms["elbo"] = -(terms["reconstruction"] + terms["kl_local"] + terms["kl_global"])
        terms["loss"] = (
            terms["reconstruction"]
            + self.kl_weight * (terms["kl_local"] + terms["kl_global"])
            + terms["align"]
            + terms["sparsity"]
        )
        return terms

    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def edge_table(self) -> Dict[str, Tensor]:
        """Learned edge probabilities ``sigmoid(phi)`` and posterior mean weights (mask = mode)."""
        return {"probability": self.edges.probabilities().detach().cpu(),
                "weight": self.edges.mean_weight().detach().cpu()}

    def learned_grn(self) -> GRN:
        """The GRN with the learned ``probability`` and ``weight`` of every edge as attributes."""
        table = self.edge_table()
        return GRN(self.spec.nodes, self.edge_index.cpu(), edge_attr=table, name="learned")
