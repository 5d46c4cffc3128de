"""The model's GRN: which edges it learns, and each edge's prior and initial logit.

``grn.edges`` picks the candidate edges over the GRN nodes:

- ``complete``: every ordered pair (GPO-VAE parity);
- ``prior``: the edges of the prior network (``grn.prior``) only;
- ``prior+knn``: prior edges plus, for every node, its ``grn.knn`` nearest neighbours;
- ``prior+complete``: prior edges marked within the complete graph;
- ``knn``: nearest neighbours only;
- ``regulators``: every perturbed node to every other node (a regulator's out-edges can carry
  any response); ``regulators+knn`` adds nearest neighbours among the other nodes for further
  hops.

Nearest neighbours: for a measured node, the measured nodes whose expression correlates most
(in absolute value) with it over training cells; for a perturbed node, also the measured nodes
that its perturbation changes most (mean log-normalised change from training controls). Both
are computed in blocks, so no V x V matrix is formed.

Edges in the prior get the Bernoulli prior ``grn.prior_prob`` (scaled towards the candidate
prior by their confidence, when the prior file gives one) and the initial logit
``grn.prior_logit``; other candidates get ``model.edges.mask_prior`` and
``model.edges.logit_init``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch

from .errors import GRNError
from .grn import GRN

log = logging.getLogger(__name__)


@dataclass
class ModelGraph:
    """The GRN a model learns plus per-edge tensors ``[E]``."""

    grn: GRN
    mask_prior: torch.Tensor
    logit_init: torch.Tensor
    in_prior: Optional[torch.Tensor] = None
    report: List[str] = field(default_factory=list)


def _edge_keys(edge_index: torch.Tensor, V: int) -> np.ndarray:
    return (edge_index[0].long() * V + edge_index[1].long()).numpy()


def knn_edges(data, k: int, max_cells: int = 10000, block: int = 512, seed: int = 0) -> torch.Tensor:
    """Candidate edges ``[2, E]`` from co-expression and perturbation-response neighbours."""
    V = len(data.nodes)
    measured = np.nonzero(data.node_gene >= 0)[0]
    src: List[np.ndarray] = []
    dst: List[np.ndarray] = []
    train = data.split_index("train")
    if len(measured) > 1 and k > 0:
        rng = np.random.default_rng(seed)
        cells = np.sort(rng.choice(train, size=min(len(train), max_cells), replace=False))
        Z = data.lognorm_rows(cells, data.node_gene[measured]).toarray().astype(np.float64)
        Z -= Z.mean(0)
        Z /= np.maximum(Z.std(0), 1e-8)
        kk = min(k, len(measured) - 1)
        for a in range(0, len(measured), block):
            corr = np.abs(Z[:, a:a + block].T @ Z) / len(cells)  # [block, Vm]
            corr[np.arange(corr.shape[0]), np.arange(a, a + corr.shape[0])] = -1.0  # no self
            top = np.argpartition(-corr, kk - 1, axis=1)[:, :kk]
            src.append(np.repeat(measured[a:a + block], kk))
            dst.append(measured[top.ravel()])
        # perturbation-response neighbours of perturbed nodes
        ctrl = np.nonzero((data.pair == -1) & (data.split == 0))[0]
        ctrl_mean = data.control_mean()
        for c, nodes in enumerate(data.condition_nodes):
            if len(nodes) != 1:
                continue
            cells_c = train[data.cell_condition[train] == c]
            if len(cells_c) == 0 or len(ctrl) == 0:
                continue
            mean = np.asarray(data.lognorm_rows(cells_c, data.node_gene[measured]).mean(axis=0)).ravel()
            effect = np.abs(mean - ctrl_mean)
            top = np.argsort(-effect, kind="stable")[: kk + 1]
            targets = measured[top]
            targets = targets[targets != nodes[0]][:kk]
            src.append(np.full(len(targets), nodes[0]))
            dst.append(targets)
    if not src:
        return torch.empty(2, 0, dtype=torch.long)
    return torch.from_numpy(np.stack([np.concatenate(src), np.concatenate(dst)])).long()


def regulator_edges(data) -> torch.Tensor:
    """Every perturbed node (in any condition, seen in training or not) to every other node:
    ``[2, R (V - 1)]``. Its out-edges can then carry any response of a regulator."""
    V = len(data.nodes)
    regs = sorted({n for nodes in data.condition_nodes for n in nodes})
    src = np.repeat(np.asarray(regs, dtype=np.int64), V)
    dst = np.tile(np.arange(V, dtype=np.int64), len(regs))
    keep = src != dst
    return torch.from_numpy(np.stack([src[keep], dst[keep]]))


def build_model_graph(data, cfg) -> ModelGraph:
    """Assemble the candidate edge set and per-edge priors for ``data`` from a recipe."""
    gcfg, ecfg = cfg.grn, cfg.model.edges
    nodes = list(data.nodes)
    V = len(nodes)
    mode = gcfg.edges
    report: List[str] = []
    prior = None
    if "prior" in mode:
        if not gcfg.prior:
            raise GRNError(f"grn.edges={mode} needs a prior network: set grn.prior to a catalog name or a file")
        prior = load_model_prior(gcfg, nodes, report)
    parts = []
    if mode in ("complete", "prior+complete"):
        parts.append(GRN.complete(nodes, self_loops=False).edge_index)
    if mode in ("regulators", "regulators+knn"):
        parts.append(regulator_edges(data))
    if mode in ("knn", "prior+knn", "regulators+knn"):
        knn = knn_edges(data, int(gcfg.knn), seed=int(cfg.seed))
        others = parts + ([prior.edge_index] if prior is not None else [])
        new = (int(np.setdiff1d(_edge_keys(knn, V), _edge_keys(torch.cat(others, dim=1), V)).size) if others
               else knn.shape[1])
        report.append(f"knn (k={int(gcfg.knn)}): {knn.shape[1]} neighbour edges, {new} not already candidates")
        if new == 0:
            log.warning("grn.edges=%s: the %d co-expression neighbour edges add nothing to the other candidates",
                        mode, knn.shape[1])
        parts.append(knn)
    if prior is not None:
        parts.append(prior.edge_index)
    edge_index = torch.cat(parts, dim=1) if parts else torch.empty(2, 0, dtype=torch.long)
    if gcfg.self_loops:
        edge_index = torch.cat([edge_index, torch.arange(V).repeat(2, 1)], dim=1)
    edge_index = torch.unique(edge_index, dim=1)  # the candidate sets overlap by design: their union
    graph = GRN(nodes, edge_index, name=mode)
    E = graph.num_edges
    if E == 0:
        raise GRNError(f"grn.edges={mode} gives no edges over the {V} GRN nodes; check grn.prior and grn.nodes")
    mask_prior = torch.full((E,), float(ecfg.mask_prior))
    logit_init = torch.full((E,), float(ecfg.logit_init))
    in_prior = None
    if prior is not None:
        keys = _edge_keys(graph.edge_index, V)
        pkeys = _edge_keys(prior.edge_index, V)
        pos = np.searchsorted(keys, pkeys)
        in_prior_np = np.zeros(E, dtype=bool)
        in_prior_np[pos] = True
        conf = prior.edge_attr.get("confidence")
        conf = torch.ones(prior.num_edges) if conf is None else torch.nan_to_num(conf.float(), nan=1.0).clamp(0, 1)
        p_hi, p_lo = float(gcfg.prior_prob), float(ecfg.mask_prior)
        pos_t = torch.from_numpy(pos)
        mask_prior[pos_t] = p_lo + conf * (p_hi - p_lo)
        logit_init[pos_t] = float(ecfg.logit_init) + conf * (float(gcfg.prior_logit) - float(ecfg.logit_init))
        in_prior = torch.from_numpy(in_prior_np)
        report.append(f"{int(in_prior_np.sum())} of {E} edges are in the prior")
    for line in report:
        log.info("GRN: %s", line)
    return ModelGraph(graph, mask_prior, logit_init, in_prior, report)


def load_model_prior(gcfg, nodes: List[str], report: List[str]) -> GRN:
    """The prior network restricted to the GRN nodes (gene names matched as ``priors`` does)."""
    from . import priors

    grn, _ = priors.load_recipe_prior(gcfg)
    mapped, mrep = priors.match_genes(grn, nodes, aliases=gcfg.aliases)
    present = set(mapped.genes)
    sub = mapped.subgraph([n for n in nodes if n in present])
    pos = {n: i for i, n in enumerate(nodes)}
    remap = torch.tensor([pos[g] for g in sub.genes], dtype=torch.long)
    ei = remap[sub.edge_index] if sub.num_edges else sub.edge_index
    keep = ei[0] != ei[1]  # the model adds its own self loops (grn.self_loops)
    out = GRN(nodes, ei[:, keep], edge_attr={k: v[keep] for k, v in sub.edge_attr.items()}, name="prior")
    report.append(f"prior {gcfg.prior}: {grn.num_edges} edges, {out.num_edges} among the {len(nodes)} GRN nodes")
    if out.num_edges < min(10, grn.num_edges):
        log.warning("the prior %s has %s among the %d GRN nodes (%s): it shapes almost nothing; check gene "
                    "names (grn.aliases) and grn.nodes", gcfg.prior,
                    "no edge" if out.num_edges == 0 else f"only {out.num_edges} edges", len(nodes),
                    mrep.summary().splitlines()[0])
    return out
