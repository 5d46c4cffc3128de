"""Penetrance: the probability that a perturbation takes effect in a cell.

In a CRISPR screen a sizeable share of the cells that carry a guide keep the target's function
(in-frame edits, one intact allele, weak knock-down): they look like controls. A model that
applies one effect to every guide-carrying cell has to average escapers and perturbed cells,
which a log-rate shift cannot do (the mean of a mixture of "unchanged" and "silenced" is not a
uniform shift), and a flexible encoder then explains the difference through the basal state.

Here each targeted node ``i`` of a cell takes effect independently with probability ``rho_i``
(learned per regulator perturbed in training; a regulator without training cells gets the mean
over the seen ones on the logit scale). A cell of a condition with targets ``T`` is a mixture
over the subsets ``S`` of ``T`` that took effect, weighted by
``prod_{i in S} rho_i prod_{i in T \\ S} (1 - rho_i)``; the likelihood marginalises the subset
exactly and predictions average over it. Edge weights then read as the effect in cells where the
perturbation took effect.

With ``population=True`` a node that took effect enters its component with dosage ``1 / rho_i``:
edge weights then read as the population-average effect of the perturbation (the mean over its
guide-carrying cells, escapers included, to first order), the unit of the training means. The
amortised edge prior, fitted to the seen regulators' weights, then predicts an unseen
regulator's average effect whatever the penetrance of the seen ones (without it, weak
perturbations with a small ``rho`` and inflated weights dominate the prior's mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

#: conditions with more targets than this are not split into subsets (2^k components each):
#: all their targets take effect
MAX_TARGETS = 4


@dataclass
class Components:
    """The mixture components of a batch of conditions.

    ``dosage`` ``[K, V]``: one dosage row per (condition, subset of its targets);
    ``log_weight`` ``[K]``: log probability of the subset; ``condition`` ``[K]``: its condition;
    ``slot`` ``[C, S]``: component row of each condition's s-th subset (-1 when the condition
    has fewer subsets); ``full`` ``[C]``: the row where every target took effect.
    """

    dosage: Tensor
    log_weight: Tensor
    condition: Tensor
    slot: Tensor
    full: Tensor


class Penetrance(nn.Module):
    """Per-node penetrance ``rho`` ``[V]`` (see the module docstring).

    The seen nodes' logits have a Normal prior ``N(logit(prior), spread^2)``
    (:meth:`neg_log_prior`), and start at its centre. A perturbation with a weak effect cannot
    tell "few cells, large effect" from "many cells, small effect", and without the prior it
    uses a small subpopulation with a large effect as a model of its noise (every weak
    perturbation drifts to ``rho`` near 0.1, together, so a prior around their own mean does not
    hold them); with it, such a node stays near ``prior``, and only a clear mixture (a strong
    effect in part of the cells) moves its own.

    Args:
        seen (Tensor): bool ``[V]``, nodes perturbed in training cells: each learns its own
            ``rho``; the others get the mean logit of the seen ones.
        prior (float): prior centre (and initial value) of ``rho``.
        spread (float): prior standard deviation of the seen logits.
        population (bool): scale the dosage of a node that took effect by ``1 / rho`` (edge
            weights are population-average effects; see the module docstring).
    """

    def __init__(self, seen: Tensor, prior: float = 0.8, spread: float = 0.5, population: bool = False):
        super().__init__()
        if not 0.0 < prior < 1.0:
            raise ValueError(f"penetrance prior must be in (0, 1), got {prior}")
        if spread <= 0:
            raise ValueError(f"penetrance spread must be > 0, got {spread}")
        self.spread = float(spread)
        self.population = bool(population)
        self.centre = math.log(prior / (1.0 - prior))
        self.register_buffer("seen", seen.bool().clone())
        self.logits = nn.Parameter(torch.full((seen.shape[0],), self.centre))

    def effective_logits(self) -> Tensor:
        """Logits of ``rho`` ``[V]``, with the seen nodes' mean for the unseen ones."""
        seen = self.seen
        if bool(seen.all()) or not bool(seen.any()):
            return self.logits
        return torch.where(seen, self.logits, self.logits[seen].mean())

    def neg_log_prior(self) -> Tensor:
        """``sum_i (logit_i - logit(prior))^2 / (2 spread^2)`` over the seen nodes."""
        return ((self.logits[self.seen] - self.centre) ** 2).sum() / (2 * self.spread ** 2)

    def probability(self) -> Tensor:
        """``rho`` per node ``[V]``."""
        return torch.sigmoid(self.effective_logits())

    def components(self, cond_dosage: Tensor) -> Components:
        """Mixture components of conditions ``cond_dosage`` ``[C, V]`` (see :class:`Components`)."""
        C, V = cond_dosage.shape
        device = cond_dosage.device
        on = cond_dosage != 0
        k = on.sum(1)
        k_max = int(k.max()) if C else 0
        enumerated = min(k_max, MAX_TARGETS)
        logits = self.effective_logits()
        log_on, log_off = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
        # the dosage of a node that took effect (1 / rho with population weights)
        gain = (-log_on).exp() if self.population else torch.ones_like(logits)
        # each condition's targets first, in node order: [C, k_max]
        order = torch.argsort(on.to(torch.int8), dim=1, descending=True, stable=True)[:, :max(k_max, 1)]
        is_target = torch.arange(order.shape[1], device=device)[None, :] < k[:, None]
        values = cond_dosage.gather(1, order) * is_target
        small = k <= MAX_TARGETS
        rows, weights, conds, slots = [], [], [], []
        count = 0
        n_slots = 2 ** enumerated
        slot = torch.full((C, n_slots), -1, dtype=torch.long, device=device)
        full = torch.empty(C, dtype=torch.long, device=device)
        for s in range(n_slots):
            bits = torch.tensor([(s >> j) & 1 for j in range(order.shape[1])], device=device, dtype=torch.bool)
            # a subset exists for a condition when it uses none of the padding positions
            valid = ~(bits[None, :] & ~is_target).any(1) & small
            everything = is_target.sum(1) == (bits[None, :] & is_target).sum(1)
            if s == 0:  # big conditions: one component, every target on
                valid = valid | ~small
            idx = torch.nonzero(valid).flatten()
            if idx.numel() == 0:
                continue
            keep = (bits[None, :] & is_target)[idx] | ~small[idx, None]
            dose = torch.zeros(idx.numel(), V, device=device, dtype=cond_dosage.dtype)
            # a condition that is not split (too many targets) keeps its dosage: no mixture
            scale = torch.where(small[idx, None], gain[order[idx]], torch.ones_like(gain[order[idx]]))
            dose.scatter_(1, order[idx], values[idx] * keep * scale)
            lw = torch.where(keep, log_on[order[idx]], log_off[order[idx]]) * is_target[idx]
            lw = torch.where(small[idx], lw.sum(1), torch.zeros_like(lw[:, 0]))
            rows.append(dose)
            weights.append(lw)
            conds.append(idx)
            slot[idx, s] = torch.arange(count, count + idx.numel(), device=device)
            is_full = (everything[idx] & small[idx]) | ~small[idx]
            full[idx[is_full]] = slot[idx[is_full], s]
            count += idx.numel()
        return Components(torch.cat(rows), torch.cat(weights), torch.cat(conds), slot, full)


def mixture_log_prob(log_prob_slot, comps: Components, cond_index: Tensor) -> Tensor:
    """``log sum_S w_S p(x | S)`` per cell ``[P, N]``.

    ``log_prob_slot(cells, rows)`` returns ``log p(x | component rows)`` ``[P, len(cells)]`` for
    the given cells and their component rows (LongTensors). Slot 0 exists for every condition,
    so the running sum is finite after it.
    """
    slots = comps.slot[cond_index]  # [N, S]
    total: Optional[Tensor] = None
    for s in range(slots.shape[1]):
        cells = torch.nonzero(slots[:, s] >= 0).flatten()
        if cells.numel() == 0:
            continue
        rows = slots[cells, s]
        lp = log_prob_slot(cells, rows) + comps.log_weight[rows]
        if total is None:  # slot 0: every cell
            total = lp.new_full((lp.shape[0], cond_index.shape[0]), float("-inf")).index_copy(1, cells, lp)
        else:
            total = total.index_add(1, cells, torch.logaddexp(total[:, cells], lp) - total[:, cells])
    return total
