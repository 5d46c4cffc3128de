"""Why the model predicts what it predicts: a prediction decomposed over the GRN paths that carry it.

For linear effect layers (``gpo_linear`` with ``aggr: add``) a perturbation's effect on node j
is a sum over walks: ``z_j = sum_walks dose_r * prod(w_e over the walk)``, with walks of 1 to
``hops`` steps (``combine: sum``) or exactly ``hops`` steps (``combine: last``) from each
perturbed node r, and ``w`` the posterior mean edge weights the prediction uses. A node's effect
shifts its own gene's log-rate (``model.decoder.skip``), so each walk's term is an exact share
of the change of the gene's expected count. Log-normalising divides by the library, which every
gene's change moves; the ``composition`` row (minus the change of the normaliser all genes
share, averaged over control cells) is that shift of every gene's share of the library, so the
walks and it add up, in log-rate, to the change of the gene's share. The predicted change in
log-normalised units (what ``predict`` and ``evaluate`` report; the expected value under the
likelihood, with the library it implies) is not a function of that sum alone (for a sparse gene
its count matters more than its divisor), so it is shared between the gene's own change and the
composition by their Shapley values (:func:`library_split`), and the walks share the own part
in proportion to their log-rates. For a combination, the node effects are the sum of its
singles' (the layers are linear in the dosages), but neither the composition (a log-sum over all
genes), a decoder that reads the effects, nor the log-normalised change need be: the
``interaction`` row holds the combination's change beyond the sum of its singles', in
log-normalised units and in log-rate (``log_rate_total`` less the singles').

Non-linear effect layers (GCN, GAT, GIN, GraphConv, plug-ins) have no walk sum. Their node effect
is attributed to single edges by integrated gradients along the straight path from no edge
weights to the posterior mean ones, ``IG_e = w_e * mean_k d z_j / d w_e (alpha_k w)`` over
``steps`` midpoints ``alpha_k``; the edge terms sum to ``z_j(w) - z_j(0)`` up to the Riemann
error, and what no edge carries (``z_j(0)``: the layers' transformation of the dosage itself,
plus that error) goes to the ``rest`` row with the edges beyond ``paths``. Rows are ``edge``
instead of ``walk``; the log-normalised change is shared in the same proportion.

When the decoder's MLP reads the node effects (``model.decoder.mlp_effects``, as GPO-VAE), every
node's effect reaches every gene, non-linearly. A gene's log-rate change is then the change of
the decoder's output for it (plus the skip, if any), averaged over the basal states of up to 200
control cells (their posterior means; prior draws without data). With linear layers it is shared
among the walks by integrated gradients with each walk's term as an input: the walks end at
nodes ``j`` and reach the gene only through the sums ``z_j``, so a walk with value ``v`` carries
``v * mean_k d out / d z_j (alpha_k z)``; the path reads ``A -> j ~> gene`` (``~>``: the decoder
reads ``j``'s effect for the gene). The terms sum to the change up to the Riemann error (in the
``rest`` row; ``steps`` shrinks it). Non-linear layers get their edge integrated gradients through
the decoder in the same way.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Dict, List, Optional

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


def walks(edge_index: torch.Tensor, weight: torch.Tensor, dose: Dict[int, float], hops: int,
          combine: str = "sum", keep: int = 20000, own_loops: bool = False) -> Dict[int, List[tuple]]:
    """Walks from the perturbed nodes (``dose``: node -> dosage), as ``{end node: [(walk, value)]}``
    with ``walk`` a tuple of node indices and ``value = dose * prod(weights)``. With ``combine``
    ``"sum"`` walks of 1..``hops`` steps count, with ``"last"`` those of exactly ``hops``. With
    ``own_loops`` (``model.effect.loops=own``) a self-loop is a one-step walk from a perturbed
    node that goes no further, and no other walk takes one. Each step keeps at most ``keep`` walks
    (the largest in absolute value); what the dropped ones carried is left for the caller to
    report as the rest (the total is known exactly)."""
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
                if w[e] == 0:
                    continue
                if own_loops and src[e] == tgt[e]:
                    if step == 1:  # the perturbed node's own change: counted, not walked on
                        found[int(tgt[e])].append((walk + (int(tgt[e]),), value * w[e]))
                    continue
                nxt.append((walk + (int(tgt[e]),), value * w[e]))
        if len(nxt) > keep:
            nxt.sort(key=lambda item: -abs(item[1]))
            nxt = nxt[:keep]
        if combine == "sum" or step == hops:
            for walk, value in nxt:
                found[walk[-1]].append((walk, value))
        frontier = nxt
    return found


def node_readout(nodes: List[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The readout of models whose effects reach genes only through the skip: gene ``g``'s
    log-rate change is its node's effect (``nodes``: each explained gene's node)."""
    index = torch.as_tensor(nodes, dtype=torch.long)
    return lambda z: z[index.to(z.device)]


def _log_rates(model, z_b: torch.Tensor, covariates: Optional[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The decoder's log-rates ``[N, G]`` of the basal states ``z_b`` ``[N, L]`` (the MLP's output
    plus the skip, before the normaliser all genes share), as a function of the node effects ``z`` ``[V]``."""
    z_b = z_b.unsqueeze(0)
    index = torch.zeros(z_b.shape[1], dtype=torch.long, device=z_b.device)

    def log_rates(z: torch.Tensor) -> torch.Tensor:
        z_p = z.view(1, 1, -1)
        return model.decoder.log_rates(z_b, model.decoder.project_effect(z_p), index, None, covariates,
                                       model.gene_effects(z_p))[1][0]

    return log_rates


def decoder_readout(model, z_b: torch.Tensor, covariates: Optional[torch.Tensor],
                    genes: List[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The readout of models whose decoder MLP reads the node effects (``model.decoder.mlp_effects``):
    each of ``genes``' log-rate (:func:`_log_rates`) averaged over the basal states ``z_b``
    ``[N, L]``, as a function of the effects ``z`` ``[V]``."""
    log_rates = _log_rates(model, z_b, covariates)
    columns = torch.as_tensor(genes, dtype=torch.long, device=z_b.device)
    return lambda z: log_rates(z).index_select(1, columns).mean(0)


def normaliser_shift(model, z_b: torch.Tensor, covariates: Optional[torch.Tensor], z: torch.Tensor) -> float:
    """How the effects ``z`` ``[V]`` move every gene's share of the library at once: minus the
    change of the normaliser ``log sum_g exp(log-rate_g)`` all genes share, averaged over the
    basal states ``z_b``; 0 for values that are already log-normalised (no normaliser)."""
    if model.decoder.likelihood != "nb":
        return 0.0
    log_rates = _log_rates(model, z_b, covariates)
    with torch.no_grad():
        return _shift(log_rates(torch.zeros_like(z)), log_rates(z))


def _shift(out0: torch.Tensor, out1: torch.Tensor) -> float:
    """Minus the mean change of ``logsumexp`` over genes from log-rates ``out0`` to ``out1`` ``[N, G]``."""
    return -float((torch.logsumexp(out1, -1) - torch.logsumexp(out0, -1)).mean())


def library_split(model, z_b: torch.Tensor, covariates: Optional[torch.Tensor], library: torch.Tensor,
                  z: torch.Tensor, genes: List[int]):
    """What of each gene's predicted change the library's composition makes, for counts.

    Log-normalising divides by the library, and every gene's change moves it: beside a gene's own
    log-rate change ``e_g`` (the walks'; the decoder's log-rate of the gene, per basal state
    ``z_b`` ``[N, L]`` with its ``library`` ``[N]``) the effects ``z`` ``[V]`` move the normaliser
    all genes share, and with it the gene's share of the library (a knock-out that silences
    highly expressed genes raises every other gene's share). The expected log-normalised value is
    not a function of the two's sum (for a sparse gene the count matters more than its divisor), so
    the change is shared between them as the Shapley values of a two-player game: the gene's own
    change alone, the composition alone (everything else the effects do), both.

    Returns ``(log_rate, own, composition)``: the composition's log-rate (minus the normaliser's
    change, averaged over the basal states) and the Shapley values ``[len(genes)]`` of the gene's
    own change and of the composition in its expected log-normalised change (they sum to the
    change over these basal states); ``None`` for values that are already log-normalised (no
    normaliser).
    """
    if model.decoder.likelihood != "nb":
        return None
    decoder = model.decoder
    cols = torch.as_tensor(genes, dtype=torch.long, device=z_b.device)
    index = torch.zeros(z_b.shape[0], dtype=torch.long, device=z_b.device)
    log_rates = _log_rates(model, z_b, covariates)

    def expected(z_):
        z_p = z_.view(1, 1, -1)
        mean, lib = decoder.predictive(z_b.unsqueeze(0), decoder.project_effect(z_p), index, library, covariates,
                                       model.gene_effects(z_p))
        return mean[0].index_select(1, cols), lib[0]

    def value(mean, lib):
        return decoder.expected_lognorm(mean.unsqueeze(0), lib.unsqueeze(0), genes=cols)[0].double()

    with torch.no_grad():
        zero = torch.zeros_like(z)
        out0, out1 = log_rates(zero), log_rates(z)
        own = (out1 - out0).index_select(1, cols).exp()  # each cell's factor of the gene's own change
        (mean0, lib0), (mean1, lib1) = expected(zero), expected(z)
        v0, v_own, v_rest, v1 = value(mean0, lib0), value(mean0 * own, lib0), value(mean1 / own, lib1), value(mean1, lib1)
    by_own = 0.5 * ((v_own - v0) + (v1 - v_rest)).mean(0)
    by_rest = 0.5 * ((v_rest - v0) + (v1 - v_own)).mean(0)
    return _shift(out0, out1), by_own.cpu().numpy(), by_rest.cpu().numpy()


def _gradients(readout: Callable[[torch.Tensor], torch.Tensor], point: torch.Tensor) -> torch.Tensor:
    """``d readout_i / d point`` for every output ``i``: ``[n, *point.shape]``."""
    point = point.detach().requires_grad_(True)
    out = readout(point)
    rows = [torch.autograd.grad(out[i], point, retain_graph=i < len(out) - 1)[0] for i in range(len(out))]
    return torch.stack(rows).double().cpu()


def walk_sensitivity(readout: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, steps: int) -> torch.Tensor:
    """``[n, V]``: each readout's gradient over the node effects, averaged over ``steps``
    midpoints of the straight path from no effects to ``z``. A walk ending at node ``j`` with
    value ``v`` then carries ``v * [i, j]`` of readout ``i``: the integrated gradients of the
    readout with each walk's term as an input (the readout sees walks only through their sums
    ``z_j``); exact with one step for a readout linear in ``z``."""
    total = torch.zeros(0, dtype=torch.float64)
    for k in range(steps):
        grad = _gradients(readout, z * ((k + 0.5) / steps))
        total = grad if k == 0 else total + grad
    return total / steps


def edge_attributions(model, dosage: torch.Tensor, weight: torch.Tensor,
                      readout: Callable[[torch.Tensor], torch.Tensor], steps: int = 32) -> List[List[tuple]]:
    """Integrated gradients of each ``readout`` output (a function of the node effects ``[V]``,
    e.g. :func:`node_readout`) over the edge weights, from no edge weights to ``weight`` ``[E]``
    (``steps`` midpoints), for the one condition ``dosage`` ``[1, V]``: per output,
    ``[((source, target), attribution)]`` for the edges with a non-zero attribution."""
    plan = model.plan_effects(dosage)
    src, tgt = model.edge_index.cpu().numpy()

    def through_effects(w: torch.Tensor) -> torch.Tensor:
        z = model.effect.compute(dosage, model.edge_index, w.unsqueeze(0), plan)
        return readout((z.dense() if hasattr(z, "dense") else z)[0, 0])

    total = sum(_gradients(through_effects, weight * ((k + 0.5) / steps)) for k in range(steps))
    ig = (total / steps) * weight.double().cpu()
    return [[((int(src[e]), int(tgt[e])), float(row[e])) for e in torch.nonzero(row).flatten().tolist()]
            for row in ig]


def explain(run, perturbation: str, gene: Optional[str] = None, top: int = 5, paths: int = 10,
            use_data: bool = True, adata=None, trust_plugins: bool = False, steps: int = 32) -> pd.DataFrame:
    """The predicted effect of ``perturbation`` (``A`` or ``A+B``) on ``gene`` (or on its ``top``
    responding genes) decomposed over the GRN walks that carry it (see the module docstring).

    ``run`` is a run directory or a loaded :class:`grnvae.Run` (for a :class:`grnvae.Model`:
    ``model.explain(...)``). Returns one row per (gene, walk), or per (gene, edge) with
    integrated gradients for non-linear layers (``kind`` ``edge``), at most ``paths`` per gene by
    absolute share plus a ``rest`` row with the others (and, for edges, what no edge carries).
    Columns: ``gene``, ``kind``, ``path`` (``A -> B -> gene``, or ``A -> B ~> gene`` when the
    decoder reads ``B``'s effect for ``gene``), ``regulator``, ``steps``, ``log_rate``,
    ``share``, ``lognorm``, and per gene ``predicted`` (its log-normalised change) and
    ``log_rate_total`` (the change of its share of the library). Over a gene's ``walk``/``edge``,
    ``rest`` and ``composition`` rows (the last for counts: :func:`library_split`), ``log_rate``
    sums to ``log_rate_total`` exactly and ``lognorm`` to its predicted change (``share``: the
    row's fraction of it). For a combination,
    ``single`` rows (each single's own predicted change, ``path`` ``"(A alone)"``) and an
    ``interaction`` row (the predicted change minus the sum of the singles') decompose the same
    change a second way. ``steps``: midpoints of the integrated gradients (models whose decoder
    reads the effects, non-linear layers); basal states for those come from up to 200 of the
    run's control cells (``use_data``, ``adata``) or the prior.
    """
    from .evaluation.evaluate import control_cells, perturbation_targets, predict_perturbations
    from .run import Run

    run = Run.of(run, trust_plugins=trust_plugins)
    model = run.model
    linear = _is_linear(model)
    targets = perturbation_targets(run, perturbation)  # a clear error for a label it cannot read
    labels = [perturbation] + (targets if len(targets) > 1 else [])
    pred = predict_perturbations(run, labels, use_data=use_data, adata=adata)
    delta = pd.DataFrame(np.asarray(pred.layers["delta"][1:]).T, index=pred.var_names, columns=labels)
    nodes = list(model.spec.nodes)
    pos = {n: i for i, n in enumerate(nodes)}
    dose_value = float(model.spec.extra.get("dose", 1.0))
    dose = {pos[t]: dose_value for t in targets}
    weight = model.edges.expected_weight().detach()
    device = weight.device

    def dosage_of(named: List[str]) -> torch.Tensor:  # [1, V]
        out = torch.zeros(1, len(nodes), device=device)
        out[0, [pos[t] for t in named]] = dose_value
        return out

    def node_effects(named: List[str]) -> torch.Tensor:  # [V]: the posterior mean effects of these targets
        with torch.no_grad():
            out = model._effects(dosage_of(named), 1, mean=True)[0]
        return (out.dense() if hasattr(out, "dense") else out)[0, 0]

    dosage = dosage_of(targets)
    z = node_effects(targets)

    genes = list(model.spec.genes)
    gene_node = {genes[g]: n for n, g in enumerate(model.spec.node_gene) if g >= 0}
    if gene is not None:
        if gene not in delta.index:
            raise RunError(f"gene {gene!r} is not among the run's {len(genes)} measured genes")
        chosen = [gene]
    else:
        chosen = list(delta[perturbation].abs().sort_values(ascending=False).index[:top])
    through_decoder = model.mlp_reads_effects
    # basal states: for a decoder that reads the effects, and for the library's normaliser (counts)
    needed = through_decoder or model.decoder.likelihood == "nb"
    x, lib, cov, _ = control_cells(run, adata, use_data and needed, max_controls=200)
    if not needed:
        z_b = lib = None
    elif x is None:
        generator = torch.Generator().manual_seed(int(run.recipe.seed))
        z_b = torch.randn(200, model.latent_dim, generator=generator).to(device)
        cov = model.first_levels(200)
        lib = torch.full((200,), float(model.spec.extra.get("library_median", 1e4)))
    else:
        z_b = model.basal_means(x, cov)
        cov = None if cov is None else cov.to(device)
    split = library_split(model, z_b, cov, None if lib is None else lib.to(device), z, [genes.index(g) for g in chosen])
    shared = 0.0 if split is None else split[0]
    if through_decoder:  # every node's effect reaches every gene through the decoder's MLP
        readout = decoder_readout(model, z_b, cov, [genes.index(g) for g in chosen])
    else:  # effects reach a gene through its own node only; a gene that is no node is not reached
        readout = node_readout([gene_node.get(g, 0) for g in chosen])
    reached = [through_decoder or g in gene_node for g in chosen]
    def own_change(z_: torch.Tensor) -> np.ndarray:  # each chosen gene's change of its expected count
        with torch.no_grad():
            return (readout(z_) - readout(torch.zeros_like(z_))).double().cpu().numpy()

    def log_rate_totals(z_: torch.Tensor) -> np.ndarray:  # ... and of its share of the library
        return np.where(reached, own_change(z_), 0.0) + normaliser_shift(model, z_b, cov, z_)

    totals = own_change(z)
    if linear:
        found = walks(model.edge_index, weight, dose, len(model.effect.layers), model.effect.combine,
                      own_loops=model.effect.own_loops)
        grad = walk_sensitivity(readout, z, steps if through_decoder else 1).numpy()
        terms = [[(walk, value * grad[i, end]) for end, ends in found.items() if grad[i, end] != 0
                  for walk, value in ends] for i in range(len(chosen))]
    else:
        terms = edge_attributions(model, dosage, weight, readout, steps)
    kind = "walk" if linear else "edge"
    # for a combination: each single's log-rate totals, whose sum the interaction row is compared to
    singles = {t: log_rate_totals(node_effects([t])) for t in targets} if len(targets) > 1 else {}
    rows = []
    for i, g in enumerate(chosen):
        predicted = float(delta.at[g, perturbation])
        own = float(totals[i]) if reached[i] else 0.0  # the change of the gene's expected count
        total = own + shared  # ... and of its share of the library
        # the predicted change (over predict's basal draws) shared as the Shapley values (over the
        # posterior means) share theirs; the walks then share their part by log-rate
        by_library = 0.0
        if split is not None:
            phi_own, phi_library = float(split[1][i]), float(split[2][i])
            both = phi_own + phi_library
            by_library = predicted * phi_library / both if both * predicted > 0 else phi_library
        by_walks = predicted - by_library

        def part(log_rate: float, lognorm: float) -> dict:
            return {"log_rate": log_rate, "share": lognorm / predicted if predicted else float("nan"), "lognorm": lognorm}

        found_g = sorted(terms[i], key=lambda item: -abs(item[1])) if reached[i] else []
        shown = found_g[:paths]
        base = {"gene": g, "predicted": predicted, "log_rate_total": total}
        for walk, value in shown:
            path = " -> ".join(nodes[j] for j in walk)
            if linear and gene_node.get(g) != walk[-1]:
                path += f" ~> {g}"  # the decoder reads the last node's effect for this gene
            rows.append({**base, "kind": kind, "path": path, "regulator": nodes[walk[0]], "steps": len(walk) - 1,
                         **part(value, by_walks * value / own if own else float("nan"))})
        rest = own - sum(v for _, v in shown)
        if abs(rest) > 1e-6 * max(1.0, abs(own)) or not shown:
            if not reached[i]:
                label = "(not a GRN node)"
            elif not found_g and not own:
                label = "(no walk reaches it)"
            else:
                label = "(other walks)" if linear else "(other edges, and what no edge carries)"
            rows.append({**base, "kind": "rest", "path": label, "regulator": "", "steps": 0,
                         **part(rest, by_walks * rest / own if own else by_walks)})
        if split is not None:
            rows.append({**base, "kind": "composition", "path": "(library composition)", "regulator": "",
                         "steps": 0, **part(shared, by_library)})
        if len(targets) > 1:
            alone = [float(delta.at[g, t]) for t in targets]
            interaction = total - sum(float(singles[t][i]) for t in targets)
            for t, d in zip(targets, alone):
                rows.append({**base, "kind": "single", "path": f"({t} alone)", "regulator": t, "steps": 0, "log_rate": float("nan"),
                             "share": float("nan"), "lognorm": d})
            rows.append({**base, "kind": "interaction", "path": "(interaction)", "regulator": "", "steps": 0,
                         "log_rate": interaction,
                         "share": float("nan"), "lognorm": predicted - sum(alone)})
    cols = ["gene", "kind", "path", "regulator", "steps", "log_rate", "share", "lognorm", "predicted", "log_rate_total"]
    return pd.DataFrame(rows, columns=cols)


def format_explanation(table: pd.DataFrame, perturbation: str) -> str:
    """The table of :func:`explain` as text, one block per gene."""
    lines = []
    for gene, part in table.groupby("gene", sort=False):
        first = part.iloc[0]
        lines.append(f"{perturbation} -> {gene}: predicted change {first['predicted']:+.3f} (log-normalised), "
                     f"log-rate change {first['log_rate_total']:+.3f}"
                     + (" (of its share of the library)" if (part["kind"] == "composition").any() else ""))
        for _, row in part.iterrows():
            rate = "" if np.isnan(row["log_rate"]) else f"{row['log_rate']:+9.3f}"
            share = "" if np.isnan(row["share"]) else f"{100 * row['share']:6.1f}%"
            lines.append(f"  {row['path']:<40} {rate:>10} {share:>8} {row['lognorm']:+9.3f}")
    return "\n".join(lines)
