"""Why the model predicts what it predicts: a prediction decomposed over the GRN paths that carry it.

For linear effect layers (``gpo_linear`` with ``aggr: add``) a perturbation's effect on node j
is a sum over walks: ``z_j = sum_walks dose_r * prod(w_e over the walk)``, with walks of 1 to
``hops`` steps (``combine: sum``) or exactly ``hops`` steps (``combine: last``) from each
perturbed node r, and ``w`` the posterior mean edge weights the prediction uses. A node's effect
shifts its own gene's log-rate (``model.decoder.skip``), so each walk's term is an exact share
of the gene's log-rate change. The predicted change in log-normalised units (what ``predict``
and ``evaluate`` report) is a monotone but nonlinear function of that log-rate change (the
expected value under the likelihood, with the library it implies), so each walk gets the
gene's log-normalised change in proportion to its log-rate share. For a combination, the
log-rate effect is the sum of its singles' (the layers are linear in the dosages); the
log-normalised change may differ from the sum of the singles' changes, and that difference is
reported as the interaction.

Non-linear effect layers (GCN, GAT, GIN, GraphConv, plug-ins) have no walk sum. Their node effect
is attributed to single edges by integrated gradients along the straight path from no edge
weights to the posterior mean ones, ``IG_e = w_e * mean_k d z_j / d w_e (alpha_k w)`` over
``steps`` midpoints ``alpha_k``; the edge terms sum to ``z_j(w) - z_j(0)`` up to the Riemann
error, and what no edge carries (``z_j(0)``: the layers' transformation of the dosage itself,
plus that error) goes to the ``rest`` row with the edges beyond ``paths``. Rows are ``edge``
instead of ``walk``; the log-normalised change is shared in the same proportion.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional

import numpy as np
import pandas as pd
import torch

from .errors import RunError


def _is_linear(model) -> bool:
    """Whether the effect layers are linear walk sums (``gpo_linear`` with ``aggr: add``)."""
    effect = model.effect
    kinds = {type(layer).__name__ for layer in effect.layers}
    zero = effect.batched and all(getattr(layer, "zero_preserving", False) for layer in effect.layers)
    return zero and kinds == {"GPOLinear"}


def _check_skip(model) -> None:
    if not model.skip:
        raise RunError("explain needs node effects on their own genes (model.decoder.skip=true); with "
                       "effects only inside the decoder no path reaches a gene directly")


def walks(edge_index: torch.Tensor, weight: torch.Tensor, dose: Dict[int, float], hops: int,
          combine: str = "sum", keep: int = 20000) -> Dict[int, List[tuple]]:
    """Walks from the perturbed nodes (``dose``: node -> dosage), as ``{end node: [(walk, value)]}``
    with ``walk`` a tuple of node indices and ``value = dose * prod(weights)``. With ``combine``
    ``"sum"`` walks of 1..``hops`` steps count, with ``"last"`` those of exactly ``hops``. Each
    step keeps at most ``keep`` walks (the largest in absolute value); what the dropped ones
    carried is left for the caller to report as the rest (the total is known exactly)."""
    src, tgt = edge_index.cpu().numpy()
    w = weight.detach().cpu().numpy().astype(np.float64)
    out_edges: Dict[int, np.ndarray] = defaultdict(lambda: np.zeros(0, dtype=np.int64))
    order = np.argsort(src, kind="stable")
    starts = np.searchsorted(src[order], np.arange(int(src.max(initial=-1)) + 2))
    for node in np.unique(src):
        out_edges[int(node)] = order[starts[node]:starts[node + 1]]
    frontier = [((int(r),), float(d)) for r, d in dose.items() if d != 0]
    found: Dict[int, List[tuple]] = defaultdict(list)
    for step in range(1, hops + 1):
        nxt = []
        for walk, value in frontier:
            for e in out_edges[walk[-1]]:
                if w[e] != 0:
                    nxt.append((walk + (int(tgt[e]),), value * w[e]))
        if len(nxt) > keep:
            nxt.sort(key=lambda item: -abs(item[1]))
            nxt = nxt[:keep]
        if combine == "sum" or step == hops:
            for walk, value in nxt:
                found[walk[-1]].append((walk, value))
        frontier = nxt
    return found


def edge_attributions(model, dosage: torch.Tensor, weight: torch.Tensor, nodes: List[int],
                      steps: int = 32) -> Dict[int, List[tuple]]:
    """Integrated gradients of the effect on each of ``nodes`` over the edge weights, from no edge
    weights to ``weight`` ``[E]`` (``steps`` midpoints), for the one condition ``dosage`` ``[1, V]``:
    ``{node: [((source, target), attribution)]}`` for the edges with a non-zero attribution."""
    if not nodes:
        return {}
    plan = model.plan_effects(dosage)
    src, tgt = model.edge_index.cpu().numpy()
    total = torch.zeros(len(nodes), weight.numel(), dtype=torch.float64)
    index = torch.as_tensor(nodes, device=weight.device)
    for k in range(steps):
        w = (weight * ((k + 0.5) / steps)).unsqueeze(0).requires_grad_(True)
        z = model.effect.compute(dosage, model.edge_index, w, plan)
        z = (z.dense() if hasattr(z, "dense") else z)[0, 0, index]
        for i in range(len(nodes)):
            total[i] += torch.autograd.grad(z[i], w, retain_graph=i < len(nodes) - 1)[0][0].double().cpu()
    ig = (total / steps) * weight.double().cpu()
    out: Dict[int, List[tuple]] = {}
    for i, node in enumerate(nodes):
        nz = torch.nonzero(ig[i]).flatten().tolist()
        out[node] = [((int(src[e]), int(tgt[e])), float(ig[i, e])) for e in nz]
    return out


def explain(run, perturbation: str, gene: Optional[str] = None, top: int = 5, paths: int = 10,
            use_data: bool = True, adata=None, trust_plugins: bool = False) -> pd.DataFrame:
    """The predicted effect of ``perturbation`` (``A`` or ``A+B``) on ``gene`` (or on its ``top``
    responding genes) decomposed over the GRN walks that carry it (see the module docstring).

    ``run`` is a run directory or a loaded :class:`grnvae.Run` (for a :class:`grnvae.Model`:
    ``model.explain(...)``). Returns one row per (gene, walk), or per (gene, edge) with
    integrated gradients for non-linear layers (``kind`` ``edge``), at most ``paths`` per gene by
    absolute share plus a ``rest`` row with the others (and, for edges, what no edge carries). Columns: ``gene``, ``kind``, ``path`` (``A -> B -> gene``), ``regulator``, ``steps``,
    ``log_rate``, ``share``, ``lognorm``, and per gene ``predicted`` (its log-normalised change)
    and ``log_rate_total``. Over a gene's ``walk`` and ``rest`` rows, ``log_rate`` sums to its
    log-rate change exactly and ``lognorm`` to its predicted change. For a combination,
    ``single`` rows (each single's own predicted change, ``path`` ``"(A alone)"``) and an
    ``interaction`` row (the predicted change minus the sum of the singles') decompose the same
    change a second way.
    """
    from .evaluation.evaluate import predict_perturbations
    from .run import Run

    run = run if isinstance(run, Run) else Run.load(run, trust_plugins=trust_plugins)
    model = run.model
    _check_skip(model)
    linear = _is_linear(model)
    sep = str(run.recipe.data.separator)
    targets = [t.strip() for t in str(perturbation).split(sep) if t.strip()]
    labels = [perturbation] + (targets if len(targets) > 1 else [])
    pred = predict_perturbations(run, labels, use_data=use_data, adata=adata)
    delta = pd.DataFrame(np.asarray(pred.layers["delta"][1:]).T, index=pred.var_names, columns=labels)
    nodes = list(model.spec.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    dose_value = float(model.spec.extra.get("dose", 1.0))
    dose = {pos[t]: dose_value for t in targets}
    weight = model.edges.expected_weight().detach()
    dosage = torch.zeros(1, len(nodes))
    dosage[0, list(dose)] = dose_value
    with torch.no_grad():
        z = model._effects(dosage.to(weight.device), 1, mean=True)[0]
    z = (z.dense() if hasattr(z, "dense") else z)[0, 0].cpu().numpy().astype(np.float64)

    genes = list(model.spec.genes)
    gene_node = {genes[g]: n for n, g in enumerate(model.spec.node_gene) if g >= 0}
    if gene is not None:
        if gene not in delta.index:
            raise RunError(f"gene {gene!r} is not among the run's {len(genes)} measured genes")
        chosen = [gene]
    else:
        chosen = list(delta[perturbation].abs().sort_values(ascending=False).index[:top])
    if linear:
        found = walks(model.edge_index, weight, dose, len(model.effect.layers), model.effect.combine)
    else:
        found = edge_attributions(model, dosage.to(weight.device), weight,
                                  [gene_node[g] for g in chosen if g in gene_node])
    kind = "walk" if linear else "edge"
    rows = []
    for g in chosen:
        predicted = float(delta.at[g, perturbation])
        node = gene_node.get(g)
        total = float(z[node]) if node is not None else 0.0
        found_g = sorted(found.get(node, []), key=lambda item: -abs(item[1])) if node is not None else []
        shown = found_g[:paths]
        base = {"gene": g, "predicted": predicted, "log_rate_total": total}
        for walk, value in shown:
            share = value / total if total else float("nan")
            rows.append({**base, "kind": kind, "path": " -> ".join(nodes[i] for i in walk), "regulator": nodes[walk[0]],
                         "steps": len(walk) - 1, "log_rate": value, "share": share,
                         "lognorm": predicted * share if total else float("nan")})
        rest = total - sum(v for _, v in shown)
        if abs(rest) > 1e-9 * max(1.0, abs(total)) or not shown:
            share = rest / total if total else float("nan")
            rest_label = "(other walks)" if linear else "(other edges, and what no edge carries)"
            rows.append({**base, "kind": "rest", "path": rest_label if node is not None else "(not a GRN node)",
                         "regulator": "", "steps": 0, "log_rate": rest, "share": share,
                         "lognorm": predicted * share if total else predicted})
        if len(targets) > 1:
            alone = [float(delta.at[g, t]) for t in targets]
            for t, d in zip(targets, alone):
                rows.append({**base, "kind": "single", "path": f"({t} alone)", "regulator": t, "steps": 0, "log_rate": float("nan"),
                             "share": float("nan"), "lognorm": d})
            rows.append({**base, "kind": "interaction", "path": "(interaction)", "regulator": "", "steps": 0, "log_rate": 0.0,
                         "share": float("nan"), "lognorm": predicted - sum(alone)})
    cols = ["gene", "kind", "path", "regulator", "steps", "log_rate", "share", "lognorm", "predicted", "log_rate_total"]
    return pd.DataFrame(rows, columns=cols)


def format_explanation(table: pd.DataFrame, perturbation: str) -> str:
    """The table of :func:`explain` as text, one block per gene."""
    lines = []
    for gene, part in table.groupby("gene", sort=False):
        first = part.iloc[0]
        lines.append(f"{perturbation} -> {gene}: predicted change {first['predicted']:+.3f} (log-normalised), "
                     f"log-rate change {first['log_rate_total']:+.3f}")
        for _, row in part.iterrows():
            rate = "" if np.isnan(row["log_rate"]) else f"{row['log_rate']:+9.3f}"
            share = "" if np.isnan(row["share"]) else f"{100 * row['share']:6.1f}%"
            lines.append(f"  {row['path']:<40} {rate:>10} {share:>8} {row['lognorm']:+9.3f}")
    return "\n".join(lines)
