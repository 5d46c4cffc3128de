"""Variational posteriors over the GRN's edges: a Bernoulli mask and a Normal weight per edge.

:class:`EdgePosterior` (GPO-VAE): q(m_e) = Bernoulli(sigmoid(phi_e)), sampled with a
straight-through Gumbel-sigmoid (hard 0/1 forward, soft gradient); q(w_e | m) Normal, either free
per edge or amortised as in GPO-VAE, where regulator i's row of weights is predicted by an MLP
from ``[mask row of i ; one-hot(i)]``. The amortised encoder is evaluated sparsely: the first
layer's product with a mask row is a sum over i's out-edges, and the output layer is evaluated
only at i's targets, so cost and memory are O(E * hidden) and over a complete graph the result
equals the dense upstream MLP.

:class:`FeatureEdgePosterior` (the ``grnvae`` model): free per-edge posteriors under a prior
amortised over gene features, which alone carries regulators without training cells.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .effect import out_edges
from .mlp import ResidualMLP
from .spmm import edge_scores, sparse_matmul, stacked_rows

log = logging.getLogger(__name__)


class _StraightThrough(torch.autograd.Function):
    """Forward: round to exact 0/1; backward: identity (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, soft: Tensor) -> Tensor:
        return (soft > 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad


def gumbel_sigmoid_st(logits: Tensor, temperature: float, n: int, generator=None) -> Tensor:
    """``n`` straight-through Gumbel-sigmoid samples of Bernoulli(sigmoid(logits)): ``[n, *shape]``."""
    u = torch.rand((n, *logits.shape), device=logits.device, dtype=logits.dtype, generator=generator)
    u = u.clamp(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    return _StraightThrough.apply(soft)


def bernoulli_kl(q_logits: Tensor, p_logits: Tensor) -> Tensor:
    """KL(Bernoulli(sigmoid(q)) || Bernoulli(sigmoid(p))), elementwise."""
    q = torch.sigmoid(q_logits)
    return q * (F.logsigmoid(q_logits) - F.logsigmoid(p_logits)) + (1 - q) * (
        F.logsigmoid(-q_logits) - F.logsigmoid(-p_logits)
    )


def normal_kl(loc: Tensor, scale: Tensor, prior_scale: float | Tensor) -> Tensor:
    """KL(N(loc, scale^2) || N(0, prior_scale^2)), elementwise."""
    var_ratio = (scale / prior_scale) ** 2
    return 0.5 * (var_ratio + (loc / prior_scale) ** 2 - 1.0 - torch.log(var_ratio))


def kept_edges(rows: Optional[Tensor], edge_index: Tensor) -> Optional[Tensor]:
    """Ids of the edges whose regulator is in ``rows`` (bool ``[V]``), ascending, or None when
    that is every edge (or ``rows`` is None): what an edge module's ``sample`` restricts its
    work to. Found from the out-edges of those regulators, not by a pass over every edge."""
    if rows is None:
        return None
    keep = out_edges(edge_index, rows.numel()).edges_of(torch.nonzero(rows).flatten())
    return None if keep.numel() == edge_index.shape[1] else keep


def _at(x: Tensor, edges: Optional[Tensor]) -> Tensor:
    """``x`` ``[E]`` at the edges ``edges`` (all when None)."""
    return x if edges is None else x.index_select(0, edges)


class EdgePosterior(nn.Module):
    """Per-edge mask logits and weight posterior over a fixed edge set.

    Args:
        edge_index (LongTensor): ``[2, E]`` regulator -> target.
        num_nodes (int): V.
        mask_prior (Tensor or float): Bernoulli prior probability per edge, ``[E]`` or scalar.
        logit_init (Tensor or float): initial mask logits, ``[E]`` or scalar.
        weight (str): ``"amortized"`` (GPO-VAE) or ``"free"``.
        weight_prior_scale (float): s in w ~ N(0, s^2).
        temperature (float): Gumbel-sigmoid temperature.
        encoder_layers, encoder_hidden (int): size of the amortised weight encoder.
    """

    #: edges of regulators without training cells carry a KL (shared by all training cells)
    unseen_kl = True

    def __init__(
        self,
        edge_index: Tensor,
        num_nodes: int,
        mask_prior: Tensor | float = 0.3,
        logit_init: Tensor | float = 0.0,
        weight: str = "amortized",
        weight_prior_scale: float = 1.0,
        temperature: float = 1.0,
        encoder_layers: int = 4,
        encoder_hidden: int = 400,
    ):
        super().__init__()
        E = edge_index.shape[1]
        key = edge_index[0] * num_nodes + edge_index[1]
        if E > 1 and not bool((key[1:] > key[:-1]).all()):
            raise ValueError("EdgePosterior needs a coalesced edge_index (sorted by source, then target, "
                             "no duplicates); GRN(...).edge_index is")
        self.num_nodes = num_nodes
        self.weight_mode = weight
        self.weight_prior_scale = float(weight_prior_scale)
        self.temperature = float(temperature)
        self.register_buffer("edge_index", edge_index.clone())
        prior = torch.as_tensor(mask_prior, dtype=torch.float32).expand(E).clone()
        self.register_buffer("prior_logits", torch.logit(prior))
        init = torch.as_tensor(logit_init, dtype=torch.float32).expand(E).clone()
        self.logits = nn.Parameter(init)
        if weight == "free":
            self.loc = nn.Parameter(torch.zeros(E))
            self.log_scale = nn.Parameter(torch.full((E,), math.log(0.1)))
        elif weight == "amortized":
            H = encoder_hidden
            # first layer of the upstream MLP on [mask row ; one-hot(i)], split in two
            self.in_mask = nn.Parameter(torch.empty(num_nodes, H))  # W_m^T: target j -> hidden
            self.in_node = nn.Embedding(num_nodes, H)  # W_o^T + bias: regulator i -> hidden
            self.act = nn.LeakyReLU()
            self.body = ResidualMLP(H, max(encoder_layers - 1, 0))
            # Normal heads evaluated only at each regulator's targets
            self.out_loc = nn.Embedding(num_nodes, H + 1)
            self.out_logvar = nn.Embedding(num_nodes, H + 1)
        else:
            raise ValueError(f"unknown edge weight posterior {weight!r}")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight_mode == "amortized":
            H = self.in_mask.shape[1]
            bound = 1.0 / math.sqrt(2 * self.num_nodes)
            nn.init.uniform_(self.in_mask, -bound, bound)
            nn.init.uniform_(self.in_node.weight, -bound, bound)
            for emb in (self.out_loc, self.out_logvar):
                nn.init.uniform_(emb.weight, -1.0 / math.sqrt(H), 1.0 / math.sqrt(H))

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    def probabilities(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def sample_mask(self, n: int) -> Tensor:
        return gumbel_sigmoid_st(self.logits, self.temperature, n)

    def weight_posterior(self, mask: Tensor, edges: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Normal posterior of the weights given sampled masks: (loc, scale) ``[P, E']``.

        ``mask`` is ``[P, E]``, or ``[P, E']`` for the edges ``edges`` (indices into the edge
        list, which must hold *all* out-edges of each of their regulators, as an amortised
        regulator's weights depend on its whole mask row). Only those regulators' rows of the
        amortised encoder are evaluated.
        """
        if self.weight_mode == "free":
            P = mask.shape[0]
            loc, log_scale = (self.loc, self.log_scale) if edges is None else (self.loc[edges], self.log_scale[edges])
            return loc.expand(P, -1), log_scale.exp().expand(P, -1) + 1e-4
        ei = self.edge_index if edges is None else self.edge_index[:, edges]
        src, tgt = ei
        P, V = mask.shape[0], self.num_nodes
        if edges is None:
            nodes, pos = None, src
            R = V
        else:  # the regulators present, renumbered 0..R-1 (edge lists are sorted by source)
            nodes, pos = torch.unique_consecutive(src, return_inverse=True)
            R = nodes.numel()
        # h_i = W_m @ mask_row_i + W_o[:, i] + b : one sparse product over i's out-edges, all particles
        h = sparse_matmul(stacked_rows(pos, P, R), tgt.repeat(P), mask.reshape(-1), self.in_mask, P * R)
        h = h.view(P, R, -1) + (self.in_node.weight if nodes is None else self.in_node.weight[nodes])
        h = self.body(self.act(h))  # [P, R, H]
        loc = self._edge_scores(h, pos, tgt, self.out_loc.weight)
        logvar = self._edge_scores(h, pos, tgt, self.out_logvar.weight)
        scale = torch.exp(0.5 * logvar.clamp(-15.0, 15.0)) + 1e-2
        return loc, scale

    def _edge_scores(self, h: Tensor, pos: Tensor, tgt: Tensor, weight: Tensor) -> Tensor:
        """``<h[p, pos_e], weight[tgt_e, :H]> + weight[tgt_e, H]`` for every edge: ``[P, E']``.

        ``h`` ``[P, R, H]`` holds the regulators' states; ``pos`` (sorted) the row of each edge's
        regulator. Dense edge sets (E' >= R V / 4) use one ``[P, R, V]`` matrix product and pick
        the edges; sparse ones a sampled dense-dense product over the edge pattern. Neither forms
        the ``[P, E', H]`` tensor of a gather.
        """
        P, R, H = h.shape
        V = weight.shape[0]
        E = pos.numel()
        bias = weight[:, H][tgt]
        if 4 * E >= R * V:
            scores = torch.matmul(h, weight[:, :H].t())  # [P, R, V]
            return scores.reshape(P, R * V)[:, pos * V + tgt] + bias
        out = edge_scores(stacked_rows(pos, P, R), tgt.repeat(P), h.reshape(P * R, H), weight[:, :H])
        return out.view(P, E) + bias

    def sample(self, n: int, rows: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Sample ``n`` particles: (mask * weight ``[n, E]``, per-edge KL ``[E]``, mask ``[n, E]``).

        The KL is analytic: Bernoulli KL of the mask plus the particle-averaged Normal KL of the
        weights against N(0, s^2). ``rows`` (bool ``[V]``) restricts the weights to the out-edges
        of those regulators (:func:`kept_edges`): every other edge gets weight 0 and only its
        Bernoulli KL, which is exact for a loss that uses no other edge's weight or weight KL (the
        model passes the regulators its effect module reaches, those whose KL the batch carries
        and, as ``unseen_kl`` says, those never perturbed in training).
        """
        mask = self.sample_mask(n)
        kl = bernoulli_kl(self.logits, self.prior_logits)
        if self.weight_mode == "free":
            rows = None  # per-edge parameters: nothing to save
        edges = kept_edges(rows, self.edge_index)
        if edges is None:
            loc, scale = self.weight_posterior(mask)
            weight = loc + scale * torch.randn_like(loc)
            return mask * weight, kl + normal_kl(loc, scale, self.weight_prior_scale).mean(0), mask
        loc, scale = self.weight_posterior(mask[:, edges], edges)
        # the same noise as the full path draws, so restricting rows changes no sample
        w_sub = loc + scale * torch.randn_like(mask)[:, edges]
        weight = mask.new_zeros(mask.shape).index_copy(1, edges, w_sub)
        kl = kl.index_add(0, edges, normal_kl(loc, scale, self.weight_prior_scale).mean(0))
        return mask * weight, kl, mask

    def expected_weight(self) -> Tensor:
        """Posterior mean of ``m * w`` per edge, ``p * mean_weight()``: ``[E]`` (the amortised
        weights depend on the whole mask row; they are taken at its mode)."""
        return self.probabilities() * self.mean_weight()

    def edge_report(self, fit: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """What the learned GRN reports per edge: ``probability``, the posterior probability that
        the edge is present, ``sigmoid(phi)``, and its ``log_odds`` ``phi`` (``[E]`` each; ``fit``
        is accepted for interface parity: nothing is fitted here)."""
        return {"probability": self.probabilities().detach(), "log_odds": self.logits.detach()}

    def edge_probability(self, fit: Optional[Tensor] = None) -> Tensor:
        """``edge_report(fit)["probability"]``."""
        return self.edge_report(fit)["probability"]

    def mean_weight(self) -> Tensor:
        """Posterior mean weight of each edge given that it is present (mask = 1): ``[E]``."""
        with torch.no_grad():
            mask = (self.logits > 0).to(self.logits.dtype).unsqueeze(0)
            loc, _ = self.weight_posterior(mask)
        return loc[0]


class FeatureEdgePosterior(nn.Module):
    """Edge posterior whose prior is amortised over gene features (empirical Bayes).

    Every edge i -> j gets its prior from the features ``f`` of its two genes (see
    :mod:`grnvae.data.features`), through small networks shared by all edges::

        m_ij ~ Bernoulli(sigmoid(a_ij)),   a_ij = c_j + a_self [i = j] + <A_s(f_i), A_j>
        w_ij ~ Normal(b_ij, s_j^2),        b_ij = d_j + b_self [i = j] + <B_s(f_i), B_j>

    where ``c_j``, ``d_j`` are each target's mean posterior logit and weight over the seen
    regulators (moment estimates), the regulator side ``A_s``, ``B_s`` is a function of the
    regulator's features only (it must carry regulators without training cells), the target side
    ``(A_j, B_j)`` a function of the target's features plus a free per-target part (every target
    is reached by the seen regulators), and the scale ``s_j`` is per target (fixed at
    ``weight_prior_scale`` unless ``learn_scale``). The regulator side has no bias, so a regulator
    whose features are zero (not a measured gene) gets ``b_ij = d_j``: the typical response of
    each target over the seen regulators, i.e. the ``mean_effect`` baseline (with the data's
    linear term, a self-loop into a measured gene takes the data's own change instead of
    ``b_self``; see :meth:`_data_linear_term`). The posterior of an edge whose regulator is perturbed in training is free,
    ``q(m_ij) = Bernoulli(sigmoid(phi_ij))``, ``q(w_ij) = Normal(mu_ij, sigma_ij^2)``; the KL to
    the prior is what fits the prior networks (to the posteriors of the seen regulators). The
    posterior of an edge whose regulator has no training cell *is* its prior (the optimum of the
    ELBO for parameters no data touch, so its KL is zero): an unseen regulator gets the edges the
    prior predicts from its features. With uninformative features that is the average response
    of the seen regulators (the ``mean_effect`` baseline), with informative ones a bilinear map of
    gene embeddings (the linear baseline of Ahlmann-Eltze et al. 2025). A weight reads as the
    log-fold change of j per unit perturbation of i when node effects shift their own gene's
    log-rate (``model.decoder.skip``).

    With ``response`` (recipe ``model.edges.prior_mean=data``), ``d_j`` on a measured target and
    the linear term come from the data instead of the posterior: the seen regulators' mean
    log-normalised changes in training cells, averaged (and regressed) as the baselines do it and
    turned into weights by inverting the map from a log-rate change to the expected
    log-normalised change (:func:`grnvae.data.features.response_weights`). A regulator without
    features then gets the ``mean_effect`` baseline and one with features the ``linear``
    baseline, predicted through the likelihood, however poorly the posterior pins down the
    weights of weak perturbations (whose average otherwise dominates ``d_j``).

    Args:
        edge_index (LongTensor): ``[2, E]`` regulator -> target, coalesced.
        features (Tensor): node features ``[V, F]``.
        seen (Tensor): bool ``[V]``, nodes perturbed in training cells.
        mask_prior (float): initial posterior edge probability of the seen edges.
        logit_init (float): added to the initial posterior mask logit ``logit(mask_prior)``.
        weight_prior_scale (float): initial s_j.
        temperature (float): Gumbel-sigmoid temperature.
        hidden (int): width of the feature networks and of the bilinear forms.
        mask (bool): sample masks; with False every edge is present (m = 1) and only the
            weights are learned.
        prior_dropout (float): in training, the probability that a seen regulator's edges are
            drawn from the prior for a step (see :meth:`sample`).
        learn_scale (bool): learn ``s_j`` by empirical Bayes; by default it stays at
            ``weight_prior_scale`` (a Gaussian scale fitted to mostly-null effects shrinks the
            few large ones hard).
        min_scale (float): a floor under the learned ``s_j``.
        linear_ridge (float): add the closed-form linear term with this ridge penalty (None: none);
            with ``response`` the penalty is relative (:func:`grnvae.data.features.linear_response_map`)
            and ``"auto"`` chooses it by leaving each measured seen regulator out in turn
            (:func:`grnvae.data.features.choose_ridge`; the choice is kept in ``chosen_ridge``).
        response (dict): the data-fitted prior's inputs (:func:`grnvae.data.features.response_weights`
            on the target nodes): ``nodes [S]``, ``delta [S, V]`` (NaN where the target is not a
            measured gene), ``grid [K]``, ``table [K, V]`` and the scalar ``dose``.
        learned_map (bool): the learned bilinear term ``<B_s(f_i), B_j>`` of the prior mean; with
            False the prior mean is ``d_j`` (plus the self term and the linear term), so an unseen
            regulator gets exactly the ``mean_effect`` or ``linear`` baseline through the likelihood.
        linear_pcs (int): principal components of the linear term's embedding with ``response``.
    """

    #: edges of regulators without training cells have KL 0 (their posterior is their prior), so
    #: a step need not sample them
    unseen_kl = False

    def __init__(self, edge_index: Tensor, features: Tensor, seen: Optional[Tensor] = None, mask_prior: float = 0.5,
                 logit_init: float = 0.0, weight_prior_scale: float = 0.5, temperature: float = 1.0,
                 hidden: int = 32, mask: bool = True, prior_dropout: float = 0.0, learn_scale: bool = False,
                 min_scale: float = 0.0, linear_ridge: Optional[float] = None,
                 response: Optional[dict] = None, learned_map: bool = True, linear_pcs: int = 10):
        super().__init__()
        self.linear_ridge = None if linear_ridge is None else (
            "auto" if linear_ridge == "auto" else float(linear_ridge))
        self.chosen_ridge: Optional[float] = None  # what linear_ridge=auto chose
        self.own_change = 0.0  # with the data's linear term: see _data_linear_term
        self.own_gene = False  # with the data prior (form 2): the own change and the composition shift
        self.learned_map = bool(learned_map)
        self.response_pcs = int(linear_pcs)
        E = edge_index.shape[1]
        V = features.shape[0]
        self.prior_dropout = float(prior_dropout)
        self.min_scale = float(min_scale)
        self.num_nodes = V
        self.weight_mode = "features"
        self.temperature = float(temperature)
        self.use_mask = bool(mask)
        self.hidden = int(hidden)
        seen = torch.ones(V, dtype=torch.bool) if seen is None else seen.bool()
        self.register_buffer("edge_index", edge_index.clone())
        self.register_buffer("features", features.float().clone())
        self.register_buffer("is_self", (edge_index[0] == edge_index[1]).float())
        self.register_buffer("seen", seen[edge_index[0]].clone())
        # the seen regulators (rows of the closed-form linear term) and each seen edge's row
        seen_nodes = torch.nonzero(seen).flatten()
        self.register_buffer("seen_nodes", seen_nodes, persistent=False)
        self.register_buffer("seen_row", torch.full((V,), -1, dtype=torch.long).index_copy(
            0, seen_nodes, torch.arange(seen_nodes.numel()))[edge_index[0]], persistent=False)
        # seen edges into each target (at least 1): the denominator of the target means
        self.register_buffer("seen_in", torch.zeros(V).index_add(0, edge_index[1], self.seen.float()).clamp(min=1.0),
                             persistent=False)
        F, H = features.shape[1], self.hidden
        # source side: [A_s ; B_s]; target side: [A_t ; B_t] (c_j, d_j are moment estimates)
        # no biases on the regulator side: a regulator without features (not a measured gene)
        # adds nothing to the target terms, so it gets d_j, the targets' typical response
        self.source_net = nn.Sequential(nn.Linear(F, H, bias=False), nn.LeakyReLU(), nn.Linear(H, 2 * H, bias=False))
        self.target_net = nn.Sequential(nn.Linear(F, H), nn.LeakyReLU(), nn.Linear(H, 2 * H))
        # targets are shared by seen and unseen regulators, so each may also keep a free part
        self.target_free = nn.Parameter(torch.zeros(V, 2 * H))
        self.logit_base = float(torch.logit(torch.tensor(float(mask_prior))))
        self.self_terms = nn.Parameter(torch.zeros(2))  # a_self, b_self
        # s_j per target: how much regulators' effects on target j spread around its prior mean
        self.log_prior_scale = nn.Parameter(torch.full((V,), math.log(float(weight_prior_scale))),
                                            requires_grad=bool(learn_scale))
        self.logit_offset = float(logit_init)
        # posterior mask logits (seen edges); without masks they are unused and not trained
        self.q_logits = nn.Parameter(torch.zeros(E), requires_grad=self.use_mask)
        self.q_loc = nn.Parameter(torch.zeros(E))
        self.q_log_scale = nn.Parameter(torch.full((E,), math.log(0.05)))
        # the data's responses (prior_mean=data): each target's mean over the responding
        # regulators, and (lazily) the linear term fitted to them; both constants
        self.from_data = response is not None
        if self.from_data:
            delta = response["delta"].double()
            known = (~torch.isnan(delta).any(0) if delta.shape[0] else torch.zeros(V, dtype=torch.bool))
            mean = delta.nan_to_num().mean(0) if delta.shape[0] else torch.zeros(V, dtype=torch.float64)
            mean = torch.where(known, mean, torch.zeros_like(mean))
            self.register_buffer("response_table", response["table"].double().clone(), persistent=False)
            self.register_buffer("response_grid", response["grid"].double().clone(), persistent=False)
            # form 1 (runs trained before form 2): no own change, no composition shift
            self.own_gene = int(response.get("form", 2)) >= 2
            share = response.get("share") if self.own_gene else None
            self.register_buffer("response_share", None if share is None else share.double().clone(), persistent=False)
            self.response_dose = float(response["dose"])
            d = torch.as_tensor(self._to_weights(mean.numpy(), np.arange(V)), dtype=torch.float32)
            self.register_buffer("response_nodes", response["nodes"].long().clone(), persistent=False)
            self.register_buffer("response", delta.nan_to_num().clone(), persistent=False)  # changes
            self.register_buffer("response_known", known, persistent=False)
            self.register_buffer("response_delta", mean, persistent=False)  # mean change per target
            self.register_buffer("response_mean", torch.where(known, d, torch.zeros_like(d)), persistent=False)
            # the seen edges into targets without data: only their means come from the posterior
            self.register_buffer("into_unknown", torch.nonzero(self.seen & ~known[edge_index[1]]).flatten(),
                                 persistent=False)
        # the self-loops the learned self term b_self applies to: with the data's linear term, not
        # those into measured genes (their own change comes from the data, _data_linear_term)
        self_b = self.is_self.clone()
        if self.from_data and self.own_gene and self.linear_ridge is not None:
            self_b = self_b * (~self.response_known).to(self_b.dtype)[edge_index[1]]
        self.register_buffer("self_b", self_b, persistent=False)
        # the data's linear term once computed (_data_linear_term), with the ridge it chose and the
        # own change (NaN: none): saved with the weights, so a loaded run predicts with the prior it
        # was trained with, without computing it again
        self.register_buffer("data_prior", torch.zeros(0))
        self.register_buffer("data_prior_fit", torch.full((2,), float("nan"), dtype=torch.float64))
        self.reset_parameters()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "data_prior"
        if key in state_dict:  # the stored prior, whatever its size (empty when it was never computed)
            self.data_prior = torch.empty_like(state_dict[key], device=self.data_prior.device)
        else:  # a run saved before the prior was kept: it is computed again from the stored responses
            state_dict[key] = self.data_prior.new_zeros(0)
            state_dict.setdefault(prefix + "data_prior_fit", self.data_prior_fit.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.data_prior.numel() not in (0, self.num_edges):  # not this graph's: derive it again
            log.warning("the stored data prior has %d values for %d edges; it is computed again from the "
                        "stored responses", self.data_prior.numel(), self.num_edges)
            self.data_prior = self.data_prior.new_zeros(0)
        ridge, own = self.data_prior_fit.tolist()
        if self.data_prior.numel():
            self.chosen_ridge = None if ridge != ridge else ridge
            self.own_change = 0.0 if own != own else own

    def reset_parameters(self) -> None:
        for net in (self.source_net, self.target_net):
            net[0].reset_parameters()
            nn.init.normal_(net[2].weight, std=0.01)
            if net[2].bias is not None:
                nn.init.zeros_(net[2].bias)
        with torch.no_grad():
            self.q_logits.fill_(self.logit_base + self.logit_offset)

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    def target_means(self, logits: bool = True) -> Tuple[Optional[Tensor], Tensor]:
        """``c_j`` and ``d_j``: the mean posterior mask logit and weight over the seen regulators'
        edges into each target, ``[V]`` each, as constants (moment estimates of the prior's
        per-target means; like the ``mean_effect`` baseline, a target's own knock-down counts
        among the responses it averages). ``c_j`` is None without ``logits``."""
        with torch.no_grad():
            use = self.seen.to(self.q_loc.dtype)
            tgt = self.edge_index[1]
            n = self.seen_in.to(use.dtype)
            c = torch.zeros_like(n).index_add(0, tgt, use * self.q_logits) / n if logits else None
            if self.from_data:  # measured targets: the mean response in the data
                ids = self.into_unknown
                d = torch.zeros_like(n).index_add(0, tgt.index_select(0, ids), self.q_loc.index_select(0, ids)) / n
                d = torch.where(self.response_known, self.response_mean.to(d.dtype), d)
            else:
                d = torch.zeros_like(n).index_add(0, tgt, use * self.q_loc) / n
        return c, d

    def linear_term(self, d: Tensor) -> Tensor:
        """Closed-form bilinear term of the prior mean ``f_i^T W f_j`` per edge ``[E]`` (a constant).

        ``W`` is the exact ridge fit (:func:`grnvae.utils.bilinear_ridge`, penalty
        ``linear_ridge``) of the seen regulators' posterior mean weights, centred on each target's
        mean ``d_j``, by their regulators' and targets' features: the ``linear`` baseline of
        Ahlmann-Eltze et al. (2025) fitted to the edge weights, recomputed from the current
        posterior at every call (like ``d_j``), over the targets the seen edges reach. An edge of
        a seen regulator absent from the graph counts as weight ``d_j``; a regulator without
        features gets 0 (``d_j`` alone).
        """
        from ..utils import bilinear_ridge

        if self.from_data:
            return self._data_linear_term()
        with torch.no_grad():
            src, tgt = self.edge_index
            S = self.seen_nodes.numel()
            if S == 0:
                return torch.zeros_like(self.q_loc)
            use = self.seen
            targets, col = torch.unique(tgt[use], return_inverse=True)  # targets the seen edges reach
            Q = self.q_loc.new_zeros(S, targets.numel())
            Q[self.seen_row[use], col] = self.q_loc[use] - d[tgt[use]]
            F = self.features.double().cpu().numpy()
            W = bilinear_ridge(F[targets.cpu().numpy()], Q.t().double().cpu().numpy(),
                               F[self.seen_nodes.cpu().numpy()], self.linear_ridge)
            W = torch.as_tensor(W, dtype=self.q_loc.dtype, device=self.q_loc.device)
            return ((self.features[tgt] @ W) * self.features[src]).sum(-1)

    def _to_weights(self, change: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Weights whose expected log-normalised change on target ``cols`` is ``change``."""
        from ..data.features import to_weights

        return to_weights(change, cols, self.response_table.cpu().numpy(),
                          self.response_grid.cpu().numpy()) / self.response_dose

    def _data_linear_term(self) -> Tensor:
        """The linear term fitted to the data's responses (``prior_mean=data``): the ``linear``
        baseline itself (:func:`grnvae.data.features.linear_response_map`: the seen regulators'
        mean log-normalised changes on the measured targets, centred on their mean, fitted by the
        principal-component scores of the same changes with ridge ``linear_ridge``), turned into
        weights and less ``d_j``, self-loops included: on them, the own change the map leaves
        over (``own_change``: how much more the measured seen regulators' own genes change than
        the map predicts, on average) is added, so an unseen measured regulator's own gene drops
        as theirs do (the learned self term, fitted to every seen self-loop, including those of
        regulators whose own gene is not measured and whose loops no data inform, would dilute
        it); 0 on targets that are not measured genes. For counts, the changes of a regulator that
        reaches every measured gene are shifted by the constant that keeps its library's
        composition (:func:`grnvae.data.features.calibrate_changes`), so that the likelihood
        predicts them, up to that constant, rather than a gene-dependent distortion of them. A
        constant, computed once."""
        from ..data.features import choose_ridge, linear_response_map

        if self.data_prior.numel():
            return self.data_prior
        with torch.no_grad():
            src, tgt = self.edge_index
            out = torch.zeros_like(self.q_loc)
            targets = torch.nonzero(self.response_known).flatten()
            if self.response_nodes.numel() and targets.numel():
                known = self.response_known.cpu().numpy()
                args = (self.response.cpu().numpy()[:, known], self.response_nodes.cpu().numpy(), np.flatnonzero(known))
                ridge = self.linear_ridge
                if ridge == "auto":
                    ridge, scores, n = choose_ridge(*args, pcs=self.response_pcs)
                    if self.chosen_ridge is None and n < 3:
                        log.info("model.edges.linear_ridge=auto: only %d measured training regulator(s) to leave out, "
                                 "too few to choose; using %g", n, ridge)
                    elif self.chosen_ridge is None:
                        log.info("model.edges.linear_ridge=auto: %g, chosen by leaving each of %d measured training "
                                 "regulators out in turn (mean Pearson of the left-out prediction per ridge: %s)",
                                 ridge, n, ", ".join(f"{r:g}: {v:.3f}" for r, v in scores.items()))
                    self.chosen_ridge = float(ridge)
                emb, W, own = linear_response_map(*args, self.num_nodes, self.response_pcs, ridge)
                emb, W = torch.as_tensor(emb), torch.as_tensor(W)
                if self.linear_ridge == "auto" and self.own_change == 0.0 and self.own_gene:
                    log.info("a measured regulator's own gene changes by %.3f (log-normalised) beyond the linear "
                             "fit, on average over the measured training regulators; unseen ones get that too", own)
                self.own_change = float(own) if self.own_gene else 0.0
                use = self.response_known[tgt].cpu()
                s_, t_ = src.cpu()[use], tgt.cpu()[use]
                change = self.response_delta.cpu()[t_] + ((emb[t_] @ W) * emb[s_]).sum(-1)
                change = change + self.own_change * (s_ == t_).to(change.dtype)  # a measured regulator's own gene
                change = change.numpy()
                if self.response_share is not None:  # each regulator's changes keep the library's composition
                    from ..data.features import calibrate_changes

                    # only where a regulator reaches every measured gene: a shift of its changes alone
                    # then decides its library (with fewer targets the others' reads move as well)
                    reach = np.bincount(s_.numpy(), minlength=self.num_nodes)
                    full = reach[s_.numpy()] == int(self.response_known.sum())
                    if full.any():
                        change[full] = calibrate_changes(
                            change[full], t_.numpy()[full], s_.numpy()[full], self.response_share.cpu().numpy(),
                            self.response_table.cpu().numpy(), self.response_grid.cpu().numpy())
                weight = torch.as_tensor(self._to_weights(change, t_.numpy()), dtype=out.dtype)
                out[use.to(out.device)] = (weight - self.response_mean.cpu()[t_]).to(out.device)
        self.data_prior = out
        self.data_prior_fit = torch.tensor([float("nan") if self.chosen_ridge is None else self.chosen_ridge,
                                            self.own_change], dtype=torch.float64, device=out.device)
        return out

    def prior(self, edges: Optional[Tensor] = None, logits: bool = True) -> Tuple[Optional[Tensor], Tensor]:
        """Amortised prior mask logits ``a`` and weight means ``b``: ``[E]`` each, or of the
        edges with ids ``edges`` only (without masks, ``a`` is only each target's mean logit
        ``c_j``, and None without ``logits``: a sampling step reads no logit then)."""
        H = self.hidden
        src, tgt = self.edge_index if edges is None else self.edge_index.index_select(1, edges)
        is_self = self.is_self if edges is None else self.is_self.index_select(0, edges)
        c, d = self.target_means(logits or self.use_mask)
        b = d.index_select(0, tgt) + self.self_terms[1] * _at(self.self_b, edges)
        if self.learned_map or self.use_mask:  # the feature networks: only these read them
            s = self.source_net(self.features)
            t = self.target_net(self.features) + self.target_free
        if self.learned_map:
            b = b + (s[src, H:] * t[tgt, H:]).sum(-1)
        if self.linear_ridge is not None:
            linear = self.linear_term(d)
            b = b + (linear if edges is None else linear.index_select(0, edges))
        if not self.use_mask:  # no mask enters the loss: skip the logits' [E, H] product
            return (c.index_select(0, tgt) if logits else None), b
        a = (s[src, :H] * t[tgt, :H]).sum(-1) + c.index_select(0, tgt) + self.self_terms[0] * is_self
        return a, b

    def posterior(self, use_prior: Optional[Tensor] = None, edges: Optional[Tensor] = None, logits: bool = True):
        """Posterior parameters ``(logits, loc, scale)`` ``[E]`` each (or of the edges with ids
        ``edges``), the prior's ``(a, b, s)``, with the prior in place for edges of regulators
        unseen in training (and for the edges flagged in ``use_prior``, bool ``[E]``). Without
        masks and ``logits``, the logits (and ``a``) are None."""
        a, b = self.prior(edges, logits)
        s = self.log_prior_scale.exp().index_select(0, _at(self.edge_index[1], edges)).clamp(min=self.min_scale)
        free = _at(self.seen if use_prior is None else self.seen & ~use_prior, edges)
        logits = None if a is None else torch.where(free, _at(self.q_logits, edges), a)
        loc = torch.where(free, _at(self.q_loc, edges), b)
        scale = torch.where(free, _at(self.q_log_scale, edges).exp() + 1e-4, s)
        return logits, loc, scale, (a, b, s)

    @property
    def prior_logits(self) -> Tensor:
        return self.prior()[0]

    @property
    def logits(self) -> Tensor:
        """Posterior mask logits ``[E]``."""
        return self.posterior()[0]

    def probabilities(self) -> Tensor:
        if not self.use_mask:
            return torch.ones_like(self.q_logits)
        return torch.sigmoid(self.logits)

    def sample(self, n: int, rows: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """``n`` particles: (mask * weight ``[n, E]``, per-edge KL ``[E]``, mask ``[n, E]``).

        ``rows`` (bool ``[V]``; without masks) restricts the work to the out-edges of those
        regulators (:func:`kept_edges`): every other edge gets weight 0 and KL 0, which is exact
        for a loss that uses no other edge's weight or KL (the model passes the regulators its
        effect module reaches and those whose KL the batch carries; never-perturbed regulators
        have KL 0 here, ``unseen_kl``). Only the kept edges' noise is drawn (``_noise``); given
        the same draws, their samples are those of the full path. On a large GRN most
        regulators are absent from a batch, so this is most of an epoch's edge work.

        In training, each seen regulator is, with probability ``prior_dropout``, drawn from the
        prior for this step (as if unseen), so that the likelihood also teaches the prior to
        predict a regulator's edges from its features; the KL is always that of the free
        posterior."""
        use_prior = None
        if self.training and self.prior_dropout > 0:
            drop = torch.rand(self.num_nodes, device=self.q_loc.device) < self.prior_dropout
            use_prior = drop[self.edge_index[0]]
        edges = None if self.use_mask else kept_edges(rows, self.edge_index)
        logits, loc, scale, (a, b, s) = self.posterior(use_prior, edges, logits=self.use_mask)
        weight = loc + scale * self._noise(n, edges)
        kl = normal_kl(_at(self.q_loc, edges) - b, _at(self.q_log_scale, edges).exp() + 1e-4, s)
        if self.use_mask:
            mask = gumbel_sigmoid_st(logits, self.temperature, n)
            kl = kl + bernoulli_kl(self.q_logits, a)
        kl = torch.where(_at(self.seen, edges), kl, torch.zeros_like(kl))  # posterior = prior: exactly 0
        if edges is not None:  # back to every edge: 0 where nothing was drawn
            weight = weight.new_zeros(n, self.num_edges).index_copy(1, edges, weight)
            kl = kl.new_zeros(self.num_edges).index_copy(0, edges, kl)
        if not self.use_mask:
            return weight, kl, torch.ones_like(weight)
        return mask * weight, kl, mask

    def _noise(self, n: int, edges: Optional[Tensor]) -> Tensor:
        """Standard normal draws ``[n, K]`` for the sampled edges (``edges``, or every edge):
        only those are drawn."""
        k = self.num_edges if edges is None else edges.numel()
        return torch.randn(n, k, device=self.q_loc.device, dtype=self.q_loc.dtype)

    def mean_weight(self) -> Tensor:
        """Posterior mean weight of each edge given that it is present: ``[E]``."""
        with torch.no_grad():
            return self.posterior()[1]

    def expected_weight(self) -> Tensor:
        """Posterior mean of ``m * w`` per edge: ``[E]`` (``p * loc``, or ``loc`` without masks)."""
        logits, loc, _, _ = self.posterior()
        return torch.sigmoid(logits) * loc if self.use_mask else loc

    def edge_report(self, fit: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """What the learned GRN reports per edge (``[E]`` each): ``probability``, its
        ``log_odds`` (which rank the edges whose probabilities round to 1) and, without masks,
        ``explained``.

        With masks, the posterior probability that the edge is present. Without (``mask=False``,
        every edge present, only weights learned), the probability that the edge carries an
        effect of its own, a direct edge (:func:`grnvae.utils.direct_edge_probability`): a
        two-group empirical-Bayes model of the posterior mean weights and their uncertainties,
        fitted on the seen regulators' edges other than self-loops (and only those flagged in
        ``fit``, bool ``[E]``, e.g. the edges the data can inform), after removing what is not
        the edge's own: shifts shared by all edges of a regulator or into a target, and what
        confident edges explain through paths (``explained``: the part of the weight a
        perturbation of the regulator passes on through other regulators). The weight stays the
        total effect the model predicts with; the posterior alone would call almost every edge
        certain of its sign."""
        from ..utils import direct_edge_probability

        with torch.no_grad():
            logits, loc, scale, _ = self.posterior()
            if self.use_mask:
                return {"probability": torch.sigmoid(logits), "log_odds": logits}
            use = self.seen & (self.is_self == 0)
            if fit is not None:
                use = use & fit.to(use.device)
            src, tgt = (i.cpu().numpy() for i in self.edge_index)
            out = direct_edge_probability(loc.double().cpu().numpy(), scale.double().cpu().numpy(), src, tgt,
                                          self.num_nodes, use.cpu().numpy())
            return {k: torch.as_tensor(v, dtype=loc.dtype, device=loc.device)
                    for k, v in zip(("probability", "log_odds", "explained"), out)}

    def edge_probability(self, fit: Optional[Tensor] = None) -> Tensor:
        """``edge_report(fit)["probability"]``."""
        return self.edge_report(fit)["probability"]

    def weight_interval(self, level: float = 0.9) -> Tuple[Tensor, Tensor]:
        """The central ``level`` posterior interval of each edge's weight given that it is
        present, ``(low, high)`` ``[E]`` each (Normal posterior; an unseen regulator's edges get
        their prior's)."""
        with torch.no_grad():
            _, loc, scale, _ = self.posterior()
            half = scale * float(torch.special.ndtri(torch.tensor(0.5 + level / 2, dtype=torch.float64)))
            return loc - half, loc + half
