"""GRNVAE: the generative model and guide with the GRN as a sparse edge set.

Per cell: counts x (G genes), dosage d over the GRN's V nodes, basal latent z_b ~ N(0, I_L).
Global (perturbation-plated) latents: an edge mask m_e and weight w_e for each GRN edge, with the
GPO-VAE posterior (:class:`~grnvae.nn.edges.EdgePosterior`, prior w ~ N(0, s^2)) or the ``grnvae``
one (:class:`~grnvae.nn.edges.FeatureEdgePosterior`, a prior amortised over gene features). The
latent perturbation effect z_p (one value per GRN node) is computed by the effect module from d
over the edges weighted by m * w, once per unique condition of a batch; the decoder maps
[z_b ; z_p] to a negative-binomial (counts) or Normal (log-normalised) likelihood, and with
``model.decoder.skip`` each measured node's effect is also added to its own gene's log-rate. The
loss is the negative plated ELBO plus, optionally, the GRN alignment loss (K-hop accumulated edge
logits against |Delta x| - fc, by sparse propagation) and a sparsity penalty.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch_geometric.utils import scatter
from tqdm.auto import tqdm

from .errors import GRNError
from .grn import GRN
from .nn.edges import EdgePosterior, FeatureEdgePosterior, normal_kl
from .nn.effect import EffectModule, EffectPlan, SparseEffects, dosage_support, khop_rows
from .nn.encoders import BasalEncoder
from .nn.likelihoods import Decoder, SkipEffects
from .nn.mlp import Projected
from .nn.penetrance import Penetrance, mixture_log_prob

log = logging.getLogger(__name__)


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
    mask_prior: Optional[Tensor] = None  # Bernoulli prior per edge [E]
    logit_init: Optional[Tensor] = None  # initial mask logit per edge [E]
    in_prior: Optional[Tensor] = None  # edge comes from the prior network [E] (bool)
    covariates: Dict[str, List[str]] = field(default_factory=dict)  # covariate -> levels
    n_qc_fail: int = 0  # training cells failing QC (artifact module)
    node_features: Optional[Tensor] = None  # [V, F] gene features of the amortised edge prior
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
    nodes), ``has_delta`` ``[N]`` (perturbed cells with a matched control); optionally
    ``cond_support`` ``[2, nnz]``, the rows and columns of the dosage's non-zero entries in
    row-major order (else they are found by scanning it).
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
        self.register_buffer("node_gene", node_gene, persistent=False)  # rebuilt from the spec
        self.skip = bool(mcfg.decoder.skip)
        self.mlp_reads_effects = bool(mcfg.decoder.mlp_effects)  # every node's effect reaches every gene
        if not mcfg.decoder.mlp_effects and self.measured_nodes.numel() == 0:
            raise GRNError(
                f"model.decoder.mlp_effects=false lets perturbation effects reach genes only through GRN "
                f"nodes that are measured genes, and none of the {V} nodes is one; set grn.nodes="
                f"perturbed+measured (or perturbed+hvg), or model.decoder.mlp_effects=true")
        self.n_train = int(spec.n_train)

        ecfg = mcfg.edges
        if ecfg.weight == "features":
            response = None
            if ecfg.prior_mean == "data":
                if "response" not in spec.extra:
                    raise GRNError("model.edges.prior_mean=data needs the training responses in the model spec; "
                                   "train the run again with this recipe")
                r = spec.extra["response"]
                if "delta" not in r:
                    raise GRNError("this run's data prior (model.edges.prior_mean=data) is stored in an older form; "
                                   "train the run again")
                # on target nodes: a measured node reads its gene's column, others NaN
                cols = torch.as_tensor(spec.node_gene, dtype=torch.long)
                delta = r["delta"][:, cols.clamp(min=0)].double()
                delta[:, cols < 0] = float("nan")
                response = {"nodes": r["nodes"].long(), "delta": delta, "grid": r["grid"],
                            "table": r["table"][:, cols.clamp(min=0)], "dose": float(spec.extra.get("dose", 1.0))}
                response["form"] = int(r["form"]) if "form" in r else 1  # a run's own prior, as trained
                if "share" in r:  # counts
                    response["share"] = torch.where(cols >= 0, r["share"][cols.clamp(min=0)].double(),
                                                    torch.zeros(len(cols), dtype=torch.float64))
            self.edges = FeatureEdgePosterior(
                self.edge_index, spec.node_features, seen=spec.node_counts > 0, mask_prior=ecfg.mask_prior,
                logit_init=ecfg.logit_init,
                weight_prior_scale=ecfg.weight_prior_scale, temperature=ecfg.temperature,
                hidden=ecfg.feature_hidden, mask=ecfg.mask, prior_dropout=ecfg.prior_dropout,
                learn_scale=ecfg.learn_prior_scale, min_scale=ecfg.min_prior_scale, linear_ridge=ecfg.linear_ridge,
                response=response, learned_map=ecfg.learned_map, linear_pcs=ecfg.response_pcs)
        else:
            self.edges = EdgePosterior(
                self.edge_index, V,
                mask_prior=spec.mask_prior if spec.mask_prior is not None else ecfg.mask_prior,
                logit_init=spec.logit_init if spec.logit_init is not None else ecfg.logit_init, weight=ecfg.weight,
                weight_prior_scale=ecfg.weight_prior_scale, temperature=ecfg.temperature,
                encoder_layers=ecfg.encoder_layers, encoder_hidden=ecfg.encoder_hidden,
            )
        self.effect = EffectModule(mcfg.effect.layer, mcfg.effect.hops, mcfg.effect.combine,
                                   mcfg.effect.hidden, OmegaConf.to_container(mcfg.effect.options),
                                   loops=mcfg.effect.loops)
        L = mcfg.latent_dim
        self.latent_dim = L
        K = sum(len(levels) for levels in spec.covariates.values())
        acfg = mcfg.artifact
        self.artifact = bool(acfg.enabled)
        self.encoder = BasalEncoder(G, V, L, mcfg.encoder.hidden, mcfg.encoder.layers, mcfg.encoder.kind,
                                    artifact=self.artifact, n_covariates=K)
        self.decoder = Decoder(L, V, G, mcfg.decoder.hidden, mcfg.decoder.layers, likelihood,
                               artifact=self.artifact, n_covariates=K, mlp_effects=mcfg.decoder.mlp_effects)
        library = bool(mcfg.decoder.library)
        if library and spec.values != "counts" and mcfg.decoder.likelihood == "auto":
            # log-normalised values have no library sizes: a recipe made for counts (the default
            # one) models them only when there are some
            log.info("model.decoder.library: off, the data are log-normalised values (no library sizes to model)")
            library = False
        if library:
            if self.likelihood != "nb" or not self.skip or "log_library" not in spec.extra:
                raise GRNError("model.decoder.library=true models the library sizes of count data: it needs "
                               f"counts, the nb likelihood and model.decoder.skip=true (here: {spec.values}, "
                               f"{self.likelihood}, skip={self.skip}); set model.decoder.library=false")
            self.decoder.set_library_model(*spec.extra["log_library"])
        if self.skip:
            # effects on nodes that no training perturbation reaches (an unseen regulator's own
            # node) must not move the encoder or decoder through untrained weights
            self.encoder.mlp.zero_input(1)
            self.decoder.mlp.zero_input(1)
        pcfg = mcfg.penetrance
        self.penetrance = (Penetrance(spec.node_counts > 0, float(pcfg.prior), float(pcfg.spread),
                                      bool(pcfg.population))
                           if pcfg.enabled else None)
        if self.artifact:
            # global artifact embedding e_qc ~ N(0, s^2 I), Normal posterior
            self.qc_loc = nn.Parameter(torch.zeros(L))
            self.qc_log_scale = nn.Parameter(torch.full((L,), -2.0))
            self.qc_prior_scale = float(acfg.prior_scale)
            self.cf_weight = float(acfg.cf_weight)
            self.n_qc_fail = int(spec.n_qc_fail)
            self.qc_fraction = spec.n_qc_fail / max(int(spec.n_train), 1)

        self.kl_weight = float(lcfg.kl_weight)
        self.align_weight = float(lcfg.align.weight)
        self.align_hops = int(lcfg.align.hops)
        self.align_fc = float(lcfg.align.fc)
        self.sparsity = float(lcfg.sparsity)
        self.invariance_weight = float(lcfg.invariance)

    # ---------------------------------------------------------------------------------------
    def standardise(self, x: Tensor) -> Tensor:
        """Encoder input: log1p counts (or log-normalised values) standardised per gene."""
        if self.values == "counts":
            x = torch.log1p(x)
        return (x - self.x_mean) / self.x_std

    def effects(self, cond_dosage: Tensor, particles: int):
        """Sample the GRN and compute latent effects per condition.

        Returns (z_p ``[P, C, V]``, per-edge KL ``[E]``). The KL (for ``EdgePosterior``, its
        weight part) is only computed for the regulators the loss uses (see :meth:`plan_effects`).
        """
        z_p, edge_kl, _ = self._effects(cond_dosage, particles)
        return (z_p.dense() if isinstance(z_p, SparseEffects) else z_p), edge_kl

    def plan_effects(self, cond_dosage: Tensor) -> EffectPlan:
        """The effect module's :class:`~grnvae.nn.effect.EffectPlan` for these conditions, with
        ``rows`` widened to every regulator whose edge KL the loss uses: the perturbed ones
        (their plated KL) and those never perturbed in training (shared by all cells), unless
        the edges give those a KL of exactly 0 (``unseen_kl`` False: their posterior is their
        prior)."""
        plan = self.effect.plan(cond_dosage, self.edge_index, self.num_nodes)
        if plan.rows is not None and self.edges.unseen_kl:  # the rows hold every perturbed node already
            plan.rows = plan.rows | (self.node_counts == 0)
        return plan

    def _effects(self, cond_dosage: Tensor, particles: int, mean: bool = False):
        """Effects of sampled GRNs (``particles`` of them), or with ``mean`` of the posterior mean
        edge weights ``E[m w]`` (one "particle"; for one linear hop over edges with independent
        posteriors, the posterior mean effect). Returns (effects, per-edge KL or None, plan)."""
        plan = self.plan_effects(cond_dosage)
        if mean:
            edge_weight = self.edges.expected_weight().unsqueeze(0)
            return self.effect.compute(cond_dosage, self.edge_index, edge_weight, plan), None, plan
        edge_weight, edge_kl, _ = self.edges.sample(particles, rows=plan.rows)
        return self.effect.compute(cond_dosage, self.edge_index, edge_weight, plan), edge_kl, plan

    def gene_effects(self, z_p: Union[Tensor, SparseEffects]) -> Union[Tensor, SkipEffects, None]:
        """Node effects placed on their own genes' columns, ``[P, C, G]`` (zero for genes that
        are no node), for the decoder's identity skip: :class:`~grnvae.nn.likelihoods.SkipEffects`
        (its non-zero entries) when the effects are sparse, else dense; None without
        ``model.decoder.skip``."""
        if not self.skip:
            return None
        G = self.n_genes
        if isinstance(z_p, SparseEffects):
            c, v = z_p.support  # sorted by condition; one node per gene
            g = self.node_gene[v]
            keep = torch.nonzero(g >= 0).flatten()
            return SkipEffects(z_p.values.index_select(1, keep), c[keep], g[keep], z_p.num_conditions, G)
        out = z_p.new_zeros(z_p.shape[0], z_p.shape[1], G)
        out[:, :, self.node_gene[self.measured_nodes]] = z_p[:, :, self.measured_nodes]
        return out

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
        rows, cols = dosage_support(cond_dosage)
        share = per_node.new_zeros(cond_dosage.shape[0]).index_add(0, rows, per_node[cols])  # [C]
        orphan = row_kl[~seen].sum() / max(self.n_train, 1)
        return share[cond_index] + orphan

    def alignment(self, batch: Dict[str, Tensor]) -> Tensor:
        """GRN alignment: L1 between K-hop accumulated edge logits and |Delta x| - fc."""
        has = batch["has_delta"]
        if self.align_weight == 0 or self.measured_nodes.numel() == 0 or not bool(has.any()):
            return self.x_mean.new_zeros(())
        rows = khop_rows(batch["cond_dosage"].abs(), self.edge_index, self.edges.logits, self.num_nodes,
                         self.align_hops)
        pred = rows[batch["cond_index"][has]][:, self.measured_nodes]
        target = batch["delta"][has] - self.align_fc
        return self.align_weight * (pred - target).abs().mean()

    def forward(self, batch: Dict[str, Tensor], particles: int = 1) -> Dict[str, Tensor]:
        x, idx = batch["x"], batch["cond_index"]
        if "cond_support" in batch:
            dosage_support(batch["cond_dosage"], batch["cond_support"])
        cov = batch.get("covariates")
        # with penetrance, effects are those of each subset of a condition's targets that took
        # effect; the encoder reads the condition's full effect
        comps = None if self.penetrance is None else self.penetrance.components(batch["cond_dosage"])
        z_p, edge_kl, plan = self._effects(batch["cond_dosage"] if comps is None else comps.dosage, particles)
        enc_idx = idx if comps is None else comps.full[idx]
        # first-layer projections of z_p (sparse over its structural support when it has one)
        # and of the expression, each computed once and shared by the encoder calls
        z_enc = self.encoder.project_effect(z_p)
        z_dec = self.decoder.project_effect(z_p)
        gene_effect = self.gene_effects(z_p)
        offset = None
        if self.artifact:
            q = batch["qc"]
            e_qc, kl_qc = self._artifact_embedding(particles)
            offset = q[None, :, None] * e_qc[:, None, :]  # [P, N, L]: each cell's own QC path
        x_std = self.standardise(x)
        x_enc = self.encoder.project_input(x_std)
        loc, scale = self.encoder(x_enc, z_enc, enc_idx, particles, offset, cov)
        z_b = loc + scale * torch.randn_like(loc)
        library = batch["library"]
        if comps is None:
            log_lik = self.decoder.log_prob(x, z_b, z_dec, idx, library, offset, cov, gene_effect)
        else:
            # when the MLP does not read effects, components differ only in the skip: run it once
            h = None if z_dec is not None else self.decoder.log_rates(z_b, None, idx, offset, cov)[0]

            def component_log_prob(cells: Tensor, rows: Tensor) -> Tensor:
                return self.decoder.log_prob(x[cells], z_b[:, cells], z_dec, rows, library[cells],
                                             None if offset is None else offset[:, cells],
                                             None if cov is None else cov[cells], gene_effect,
                                             h=None if h is None else h[:, cells])
            log_lik = mixture_log_prob(component_log_prob, comps, idx)
        log_lik = log_lik.mean(0)  # [N]
        kl_local = normal_kl(loc, scale, 1.0).sum(-1).mean(0)  # [N]
        kl_global = self.plated_kl(edge_kl, batch["cond_dosage"], idx)  # [N]
        if self.penetrance is not None:  # a global prior term, shared by all training cells
            kl_global = kl_global + self.penetrance.neg_log_prior() / max(self.n_train, 1)
        weight = None
        terms: Dict[str, Tensor] = {}
        if self.artifact:
            # the artifact embedding is plated over QC-failing cells: each carries 1/N_fail of its KL
            kl_global = kl_global + q * kl_qc / max(self.n_qc_fail, 1)
            weight = self._qc_balance(q)
            terms["counterfactual"] = self.cf_weight * self._counterfactual_kl(
                batch, x_enc, z_enc, enc_idx, e_qc, particles)
        rec = -log_lik if weight is None else -(weight * log_lik)
        terms.update({
            "reconstruction": rec.mean(),
            "kl_local": kl_local.mean(),
            "kl_global": kl_global.mean(),
            "align": self.alignment(batch),
            "sparsity": (self.sparsity * self.edges.probabilities().mean() if self.sparsity
                         else self.x_mean.new_zeros(())),
            "invariance": self.invariance(loc, batch["cond_dosage"], idx),
        })
        terms["elbo"] = -(terms["reconstruction"] + terms["kl_local"] + terms["kl_global"])
        terms["loss"] = (
            terms["reconstruction"]
            + self.kl_weight * (terms["kl_local"] + terms["kl_global"])
            + terms["align"]
            + terms["sparsity"]
            + terms["invariance"]
            + terms.get("counterfactual", 0.0)
        )
        return terms

    def invariance(self, loc: Tensor, cond_dosage: Tensor, cond_index: Tensor) -> Tensor:
        """Basal-invariance penalty: ``w * sum_c (N_c / N) ||mean_c(loc) - mean_ctrl(loc)||^2``.

        A perturbation should move a cell through its effect, not through its basal state: the
        basal state is what the cell would be without it, so the perturbed cells of condition c
        and the controls share its distribution. A flexible encoder breaks that when a
        perturbation's cells resemble a subset of controls (a knock-out of a pathway that is
        active in some controls): it places them in that subset's region of z_b, the decoder
        explains part of the effect from z_b, and the effect the GRN carries shrinks. This term
        pulls each condition's mean encoder location (``loc`` ``[P, N, L]``, averaged over
        particles) in the batch to the batch controls' mean. Zero without weight, without
        control cells in the batch, or when only controls are present.
        """
        if self.invariance_weight == 0:
            return loc.new_zeros(())
        control = torch.ones(cond_dosage.shape[0], dtype=torch.bool, device=cond_dosage.device)  # [C]
        control[dosage_support(cond_dosage)[0]] = False
        is_ctrl = control[cond_index]
        if not bool(is_ctrl.any()) or bool(is_ctrl.all()):
            return loc.new_zeros(())
        z = loc.mean(0)  # [N, L]
        C = cond_dosage.shape[0]
        counts = torch.bincount(cond_index, minlength=C).to(z.dtype)
        means = z.new_zeros(C, z.shape[1]).index_add(0, cond_index, z) / counts.clamp(min=1.0)[:, None]
        ref = z[is_ctrl].mean(0)
        use = (counts > 0) & ~control
        gap = ((means - ref) ** 2).sum(-1)
        return self.invariance_weight * (counts[use] * gap[use]).sum() / z.shape[0]

    # ------------------------------------------------------------------------- artifact module
    def _artifact_embedding(self, particles: int):
        """Samples of e_qc ``[P, L]`` and KL(q(e_qc) || N(0, s^2 I)) (a scalar)."""
        scale = self.qc_log_scale.exp() + 1e-4
        e = self.qc_loc + scale * torch.randn(particles, self.latent_dim, device=scale.device)
        kl = normal_kl(self.qc_loc, scale, self.qc_prior_scale).sum()
        return e, kl

    def _qc_balance(self, q: Tensor) -> Tensor:
        """Per-cell reconstruction weights giving QC-passing and QC-failing cells equal total weight.

        With a failing fraction a (training cells), passing cells weigh 1 / (2 (1 - a)) and failing
        cells 1 / (2 a), so both groups contribute half and the weights average to 1.
        """
        a = self.qc_fraction
        if a <= 0.0 or a >= 1.0:
            return torch.ones_like(q)
        return torch.where(q > 0, torch.full_like(q, 0.5 / a), torch.full_like(q, 0.5 / (1.0 - a)))

    def _counterfactual_kl(self, batch: Dict[str, Tensor], x_enc: Projected, z_enc: Optional[Projected],
                           cond_index: Tensor, e_qc: Tensor, particles: int) -> Tensor:
        """KL between a real cell of the opposite QC status and this cell's counterfactual.

        For cell n with status q_n and partner m (same perturbation and split, status 1 - q_n):
        KL( q(z_b | x_m, z_p, q_m e_qc) || q(z_b | x_n, z_p, (1 - q_n) e_qc) ), the correct Normal
        KL (including the 1 / sigma^2 factor), averaged over cells that have a partner.
        ``x_enc`` and ``z_enc`` are the batch's projected expression and effects (rows:
        ``cond_index``).
        """
        has = batch["has_cf"]
        if not bool(has.any()):
            return x_enc.h.new_zeros(())
        idx = cond_index[has]
        flipped = (1.0 - batch["qc"][has])[None, :, None] * e_qc[:, None, :]
        cov = batch.get("covariates")
        cov_cf = batch.get("covariates_cf")
        loc_n, scale_n = self.encoder(Projected(x_enc.h[has]), z_enc, idx, particles, flipped,
                                      None if cov is None else cov[has])
        loc_m, scale_m = self.encoder(self.standardise(batch["x_cf"][has]), z_enc, idx, particles, flipped,
                                      None if cov_cf is None else cov_cf[has])
        kl = (torch.log(scale_n / scale_m) + (scale_m ** 2 + (loc_m - loc_n) ** 2) / (2 * scale_n ** 2) - 0.5)
        return kl.sum(-1).mean()

    # ------------------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(self, dosage: Tensor, x_ctrl: Optional[Tensor] = None, library: Optional[Tensor] = None,
                covariates: Optional[Tensor] = None, particles: int = 5, n_prior: int = 256,
                chunk: int = 128, effects: str = "mean", progress: bool = False) -> Tensor:
        """Predicted mean log-normalised expression of each condition: ``[C, G]``, never negative.

        The statistic is the one a reference effect is made of: the expectation of
        ``log1p(x / library * 1e4)`` under the likelihood (for counts, the exact negative-binomial
        expectation, not the log of the mean), for each control cell with its own library size
        and covariates, averaged over cells and particles. Control cells (``x_ctrl`` ``[N, G]``,
        ``library`` ``[N]``, ``covariates``) give basal states drawn from their posterior (encoded
        with the control effect); without them, ``n_prior`` basal states are drawn from the prior
        N(0, I) with the training median library size. Each particle draws each cell's basal
        state once, shared by all conditions, on the artifact-free path. ``effects="mean"``
        (default) propagates the posterior mean edge weights ``E[m w]`` (for one linear hop over
        edges with independent posteriors, the posterior mean effect, free of Monte-Carlo noise);
        ``"sample"`` draws a GRN per particle (the full posterior predictive, noisier with few
        particles). With penetrance, each condition's prediction is the mixture over the subsets
        of its targets that took effect; with a library model each control cell's library is
        scaled by the change the condition's effects make. ``progress``: a progress bar over
        conditions x chunks of controls (shown on a terminal only).
        """
        if effects not in ("mean", "sample"):
            raise ValueError(f"effects must be 'mean' or 'sample', got {effects!r}")
        self.eval()
        device = self.x_mean.device
        dosage = dosage.to(device)
        C = dosage.shape[0]
        control_dose = torch.zeros(1, self.num_nodes, device=device)
        full = torch.cat([control_dose, dosage])
        comps = None if self.penetrance is None else self.penetrance.components(full)
        z_p, _, _ = self._effects(full if comps is None else comps.dosage, particles,
                                  mean=effects == "mean")  # [P or 1, rows, V]
        # each condition's rows of z_p and their weights (the subsets of targets that took effect)
        if comps is None:
            mixture = [[(1 + c, 1.0)] for c in range(C)]
        else:
            weight = comps.log_weight.exp().tolist()
            mixture = [[(int(r), weight[int(r)]) for r in comps.slot[1 + c] if r >= 0] for c in range(C)]
        z_dec = self.decoder.project_effect(z_p)  # once, not per chunk and condition
        gene_effect = self.gene_effects(z_p)
        if x_ctrl is None:
            n = n_prior
            lib = torch.full((n,), float(self.spec.extra.get("library_median", 1e4)), device=device)
            z_b_all = torch.randn(particles, n, self.latent_dim, device=device)
            cov_all = self.first_levels(n)
        else:
            x_ctrl, lib = x_ctrl.to(device), library.to(device)
            cov_all = None if covariates is None else covariates.to(device)
            idx0 = torch.zeros(x_ctrl.shape[0], dtype=torch.long, device=device)  # the control's row
            if comps is not None:
                idx0 = idx0 + comps.full[0]
            loc, scale = self.encoder(self.standardise(x_ctrl), self.encoder.project_effect(z_p), idx0, particles,
                                      None, cov_all)  # row 0: the control
            loc, scale = loc.expand(particles, -1, -1), scale.expand(particles, -1, -1)
            z_b_all = loc + scale * torch.randn_like(loc)  # a posterior draw per particle and cell
            n = x_ctrl.shape[0]
        total = torch.zeros(C, self.n_genes, device=device)
        bar = tqdm(total=C * -(-n // chunk), desc="predicting (conditions x chunks of controls)",
                   disable=None if progress else True, leave=False)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            z_b = z_b_all[:, a:b]
            cov = None if cov_all is None else cov_all[a:b]
            # when the MLP does not read effects, its output is the same for every condition
            h = None if z_dec is not None else self.decoder.log_rates(z_b, None, None, None, cov)[0]
            for c in range(C):
                for row, w in mixture[c]:
                    index = torch.full((b - a,), row, dtype=torch.long, device=device)
                    mean, lib_c = self.decoder.predictive(z_b, z_dec, index, lib[a:b], cov, gene_effect, h=h)
                    total[c] += w * self.decoder.expected_lognorm(mean, lib_c).mean(0).sum(0)
                bar.update()
        bar.close()
        return (total / n).cpu()

    def first_levels(self, n: int) -> Optional[Tensor]:
        """Covariates ``[n, K]`` of ``n`` cells at the first level of each covariate (what
        predictions from the prior assume); None without covariates."""
        if not self.spec.covariates:
            return None
        out = torch.zeros(n, sum(len(v) for v in self.spec.covariates.values()), device=self.x_mean.device)
        start = 0
        for levels in self.spec.covariates.values():
            out[:, start] = 1.0
            start += len(levels)
        return out

    @torch.no_grad()
    def basal_means(self, x_ctrl: Tensor, covariates: Optional[Tensor] = None) -> Tensor:
        """Posterior mean basal states ``[N, L]`` of control cells (``x_ctrl`` ``[N, G]``), encoded
        with the control's effects."""
        self.eval()
        device = self.x_mean.device
        z_p = self._effects(torch.zeros(1, self.num_nodes, device=device), 1, mean=True)[0]
        index = torch.zeros(x_ctrl.shape[0], dtype=torch.long, device=device)
        cov = None if covariates is None else covariates.to(device)
        loc, _ = self.encoder(self.standardise(x_ctrl.to(device)), self.encoder.project_effect(z_p), index, 1, None, cov)
        return loc[0]

    @torch.no_grad()
    def encode_cells(self, x: Tensor, cond_dosage: Tensor, cond_index: Tensor, library: Tensor,
                     covariates: Optional[Tensor] = None, samples: int = 10,
                     expected: bool = True, noise: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Each cell's basal state (posterior mean, ``latent`` ``[N, L]``) and its expected
        log-normalised expression under the model (``expected`` ``[N, G]``): averaged over
        ``samples`` draws of the basal state from its posterior, with the cell's own condition's
        effects (posterior mean edge weights) and observed library. ``cond_dosage`` ``[C, V]``
        holds the cells' conditions, ``cond_index`` ``[N]`` each cell's row; with penetrance, a
        cell is taken with all of its targets in effect. ``expected=False``: the basal states only
        (the decoder is not run). ``noise`` ``[samples, N, L]``: the standard normal draws to
        use (e.g. drawn per cell, so that a cell's result does not depend on the others')."""
        self.eval()
        comps = None if self.penetrance is None else self.penetrance.components(cond_dosage)
        z_p, _, _ = self._effects(cond_dosage if comps is None else comps.dosage, 1, mean=True)
        idx = cond_index if comps is None else comps.full[cond_index]
        loc, scale = self.encoder(self.standardise(x), self.encoder.project_effect(z_p), idx, samples, None,
                                  covariates)
        if not expected:
            return {"latent": loc[0]}
        z_b = loc + scale * (torch.randn_like(loc) if noise is None else noise.to(loc))
        mean = self.decoder.mean(z_b, self.decoder.project_effect(z_p), idx, library, None, covariates,
                                 self.gene_effects(z_p))
        return {"latent": loc[0], "expected": self.decoder.expected_lognorm(mean, library).mean(0)}

    # ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def edge_table(self, evidence: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
        """Learned edge probabilities (see ``edge_report`` of the edge posterior; fitted on
        the edges the data can inform, :meth:`edge_evidence`) with their log-odds (which rank
        the edges whose probabilities round to 1), the part of each weight that other edges
        explain through paths (``explained``, weight-only edges) and posterior mean weights given
        the edge is present, with their central 90 % posterior interval (``weight_low``,
        ``weight_high``) where the edge posterior gives one. ``evidence``: :meth:`edge_evidence`,
        when the caller has it already."""
        edges = self.edges
        evidence = self.edge_evidence() if evidence is None else evidence
        report = edges.edge_report(fit=evidence["informed"].to(self.edge_index.device))
        table = {"probability": report["probability"].cpu(), "log_odds": report["log_odds"].cpu(),
                 "weight": edges.mean_weight().detach().cpu()}
        if hasattr(edges, "weight_interval"):
            low, high = edges.weight_interval(0.9)
            table.update(weight_low=low.cpu(), weight_high=high.cpu())
        if "explained" in report:
            table["explained"] = report["explained"].cpu()
        return table

    @torch.no_grad()
    def edge_evidence(self) -> Dict[str, Tensor]:
        """What the data can say about each edge: ``informed`` (bool ``[E]``) when some hop ``h``
        of the effect module carries a training perturbation along it to something the
        likelihood sees: its regulator is perturbed in training cells or reached from such a
        regulator in ``h - 1`` hops, and its target is a measured gene or reaches one in the
        remaining hops (an edge into a node that touches no measured gene changes nothing the
        likelihood sees through the skip, so it keeps its prior), or, when the decoder's MLP reads
        the effects (``model.decoder.mlp_effects``, as GPO-VAE), whatever its target. With own
        loops (``model.effect.loops=own``) a self-loop is used at the first hop only, from a
        perturbed node. ``evidence`` ``[E]``: the number of training cells in which the edge's
        regulator is perturbed."""
        src, tgt = self.edge_index.cpu()
        counts = self.node_counts.cpu()
        hops = len(self.effect.layers)
        walked = src != tgt if self.effect.own_loops else torch.ones_like(src, dtype=torch.bool)

        def step_back(nodes: Tensor) -> Tensor:  # nodes with a walked edge into ``nodes``
            return torch.zeros_like(nodes).index_fill(0, src[walked & nodes[tgt]], True)

        def step_on(nodes: Tensor) -> Tensor:  # nodes a walked edge leads to from ``nodes``
            return torch.zeros_like(nodes).index_fill(0, tgt[walked & nodes[src]], True)

        seen = torch.full((self.num_nodes,), self.mlp_reads_effects, dtype=torch.bool)
        seen[self.measured_nodes.cpu()] = True
        # sees[r]: the nodes whose state after r more hops reaches the output where the likelihood
        # sees it: every hop's output counts with combine=sum (r hops or fewer), the last one only
        # with combine=last (exactly r)
        sees = [seen]
        for _ in range(hops - 1):
            back = step_back(sees[-1])
            sees.append(back | sees[-1] if self.effect.combine == "sum" else back)
        start = counts > 0  # the nodes a training perturbation reaches in exactly h - 1 hops
        informed = torch.zeros_like(src, dtype=torch.bool)
        for h in range(1, hops + 1):
            use = start[src] & sees[hops - h][tgt]
            informed |= use if h == 1 else use & walked
            start = step_on(start)
        return {"informed": informed, "evidence": counts[src].to(torch.int64)}

    def learned_grn(self) -> GRN:
        """The GRN with the learned ``probability`` and ``weight`` of every edge as attributes,
        and what the data can say about it (:meth:`edge_evidence`)."""
        evidence = self.edge_evidence()
        table = self.edge_table(evidence)
        table.update(evidence)
        if self.spec.in_prior is not None:
            table["in_prior"] = self.spec.in_prior.bool()
        return GRN(self.spec.nodes, self.edge_index.cpu(), edge_attr=table, name="learned")
