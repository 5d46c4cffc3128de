"""The effect module: perturbation dosages propagated over the sampled GRN by effect layers,
and the sparse K-hop accumulation used by the GRN alignment loss."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ..errors import RecipeError
from .registry import LAYERS
from .spmm import edge_matmul, row_pointer


class SparseEffects(NamedTuple):
    """Effects ``[P, C, V]`` stored as their values on a structural support (see
    :class:`EffectPlan`): ``values`` ``[P, nnz]`` at the sorted (condition, node) coordinates
    ``support`` ``[2, nnz]``; every other entry is zero for any parameter value."""

    values: Tensor
    support: Tensor
    num_conditions: int
    num_nodes: int

    def dense(self) -> Tensor:
        P = self.values.shape[0]
        keys = self.support[0] * self.num_nodes + self.support[1]
        out = self.values.new_zeros(P, self.num_conditions * self.num_nodes).index_copy(1, keys, self.values)
        return out.view(P, self.num_conditions, self.num_nodes)


@dataclass
class SparseHop:
    """One hop between (condition, node) pairs: pair ``src[m]`` of the hop's input sends along
    GRN edge ``edge[m]`` to pair ``dst[m]`` of its output; ``out_pos`` places the output pairs
    in the support (None when the hop's output is not part of the effects)."""

    src: Tensor
    dst: Tensor
    edge: Tensor
    n_in: int
    n_out: int
    out_pos: Optional[Tensor] = None


@dataclass
class EffectPlan:
    """Where a batch's perturbation effects can be non-zero, found from the graph alone.

    For effect layers whose output at a node vanishes when none of its in-neighbours' states is
    non-zero (``local_support = True``, e.g. ``gpo_linear``), a condition's effect can only be
    non-zero on the nodes reachable from its perturbed nodes in 1..hops steps over the edge set,
    whatever the sampled masks and weights: this is *structural* (a masked-out edge still counts,
    as its straight-through gradient flows through its target). Fields (None = everything):

    - ``hop_edges``: per hop, the edges leaving nodes with a possibly non-zero state (the others
      carry nothing and are skipped by zero-preserving layers), or None for all edges;
    - ``rows``: bool ``[V]``, the regulators whose out-edge weights the effect module uses;
    - ``support``: ``[2, nnz]`` (condition, node) coordinates, sorted, outside which the effects
      ``[P, C, V]`` are exactly zero for every parameter value; None when the hops over the
      pairs would pass more (pair, edge) combinations than ``2 C V``;
    - ``inputs`` ``[2, n0]`` (the non-zero dosages) and ``hops`` (one :class:`SparseHop` per
      layer): the pairs to run the layers over when ``support`` is set;
    - ``sparse``: whether the support is sparse enough (at most ``max_density`` of ``C x V``)
      to keep the effects as :class:`SparseEffects`; if not, they are made dense for the
      dense products that follow.
    """

    hop_edges: List[Optional[Tensor]] = field(default_factory=list)
    rows: Optional[Tensor] = None
    support: Optional[Tensor] = None
    inputs: Optional[Tensor] = None
    hops: List[SparseHop] = field(default_factory=list)
    sparse: bool = False
    #: with own loops (``EffectModule.own_loops``): the inputs whose node has a self-loop, its
    #: edge id and their place in the support (the own-change term, added once)
    loop_inputs: Optional[Tensor] = None
    loop_edges: Optional[Tensor] = None
    loop_pos: Optional[Tensor] = None


class _OutEdges:
    """A GRN's out-edges grouped by source, to expand (condition, node) pairs over them."""

    def __init__(self, edge_index: Tensor, num_nodes: int):
        src = edge_index[0]
        self.num_nodes = num_nodes
        self.order = torch.argsort(src, stable=True)  # edge ids grouped by source
        self.targets = edge_index[1][self.order]
        self.ptr = row_pointer(src, num_nodes)

    def _slots(self, v: Tensor) -> Tuple[Tensor, Tensor]:
        """The out-edges of each node in ``v`` (repeats allowed): per node its out-degree, and
        their positions in the grouped order (``order``, ``targets``), node after node."""
        deg = self.ptr[v + 1] - self.ptr[v]
        slot = torch.repeat_interleave(self.ptr[v] - (torch.cumsum(deg, 0) - deg), deg)
        return deg, slot + torch.arange(slot.numel(), device=v.device)

    def edges_of(self, nodes: Tensor) -> Tensor:
        """Ids of the out-edges of ``nodes`` (sorted, unique), ascending: the ids ``nonzero``
        of a mask over every edge would give, found in O(their number) rather than O(E)."""
        ids = self.order[self._slots(nodes)[1]]
        if ids.numel() > 1 and not bool((ids[1:] > ids[:-1]).all()):  # edges not sorted by source
            ids = torch.sort(ids).values
        return ids

    def count(self, keys: Tensor) -> int:
        """How many (pair, edge) combinations :meth:`expand` would produce."""
        v = keys % self.num_nodes
        return int((self.ptr[v + 1] - self.ptr[v]).sum())

    def expand(self, keys: Tensor):
        """One hop of sorted keys ``c * V + v``: (sorted unique output keys ``c * V + t`` for every
        edge v -> t, and per combination its input position, edge id and output position; None
        for the positions when each combination reaches its own output pair, in order)."""
        V = self.num_nodes
        c, v = keys // V, keys % V
        deg, slot = self._slots(v)
        src = torch.repeat_interleave(torch.arange(keys.numel(), device=keys.device), deg)
        total = src.numel()
        out = c[src] * V + self.targets[slot]
        if total < 2 or bool((out[1:] > out[:-1]).all()):
            # already sorted and unique (e.g. one perturbed node per condition over a coalesced
            # graph): each combination is its own output pair, in CSR order
            return out, src, self.order[slot], None
        out, dst = torch.unique(out, return_inverse=True)
        return out, src, self.order[slot], dst


_PER_TENSOR: Dict[tuple, tuple] = {}  # (id(tensor), what) -> (weak reference, version, extra, value)


def _per_tensor(tensor: Tensor, what: str, build, extra=None):
    """``build()`` once per tensor and ``what`` (a model's ``edge_index`` buffer is the same
    tensor at every step; a batch's dosage is read by several parts of one step), again when the
    tensor was modified in place or is asked for with another ``extra``. Entries go when their
    tensor does."""
    key = (id(tensor), what)
    entry = _PER_TENSOR.get(key)
    if entry is not None and entry[0]() is tensor and entry[1:3] == (tensor._version, extra):
        return entry[3]
    value = build()
    ref = weakref.ref(tensor, lambda _, k=key: _PER_TENSOR.pop(k, None))
    _PER_TENSOR[key] = (ref, tensor._version, extra, value)
    return value


def out_edges(edge_index: Tensor, num_nodes: int) -> _OutEdges:
    """The :class:`_OutEdges` of an edge index, built once per tensor."""
    return _per_tensor(edge_index, "out", lambda: _OutEdges(edge_index, num_nodes), num_nodes)


def in_edges(edge_index: Tensor, num_nodes: int):
    """Edge ids grouped by target and the targets' row pointer, built once per tensor."""
    tgt = edge_index[1]
    return _per_tensor(edge_index, "in", lambda: (torch.argsort(tgt, stable=True), row_pointer(tgt, num_nodes)),
                       num_nodes)


def loop_split(edge_index: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``(walked, ids, loop)``: the edges other than self-loops ``[2, E']`` and their ids, and
    each node's self-loop edge id ``[V]`` (-1 for none); built once per tensor."""
    def build():
        is_loop = edge_index[0] == edge_index[1]
        ids = torch.nonzero(~is_loop).flatten()
        loop = torch.full((num_nodes,), -1, dtype=torch.long, device=edge_index.device)
        loops = torch.nonzero(is_loop).flatten()
        loop[edge_index[0, loops]] = loops
        return edge_index.index_select(1, ids).contiguous(), ids, loop

    return _per_tensor(edge_index, "loops", build, num_nodes)


def dosage_support(dosage: Tensor, known: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Rows and columns of the non-zero dosages ``[C, V]``, in row-major order: one scan of the
    dense matrix per batch, shared by the effect plan, the plated KL and the invariance term.
    ``known`` ``[2, nnz]``: the rows and columns when the caller has them (a batch carries them
    as ``cond_support``), kept for this tensor in place of the scan (a few ms at C = 500,
    V = 10,000)."""
    if known is not None:
        _PER_TENSOR.pop((id(dosage), "support"), None)
        return _per_tensor(dosage, "support", lambda: (known[0], known[1]))
    return _per_tensor(dosage, "support", lambda: tuple(torch.nonzero(dosage, as_tuple=True)))


def _keys(dosage: Tensor) -> Tensor:
    """Sorted keys ``c * V + v`` of the non-zero dosages ``[C, V]``."""
    rows, cols = dosage_support(dosage)
    return rows * dosage.shape[1] + cols


#: memory bound of a standard PyG layer's messages per hop (bytes); above it, a clear error
STANDARD_LAYER_BYTES = 8 * 2**30


class EffectModule(nn.Module):
    """A stack of registered effect layers run over the GRN, once per unique condition.

    ``h_0 = d``, ``h_{k+1} = layer_k(h_k, edge_index, m * w)``. Two kinds of layers:

    - *particle-batched scalar layers* (class attribute ``batched = True``, e.g. ``gpo_linear``):
      built as ``cls(**options)``, called with ``x`` ``[V, P, C]`` and ``edge_weight`` ``[E, P]``;
      the output is ``sum_k h_k`` (``combine="sum"``: the total effect of a linear cascade) or
      ``h_hops`` (``combine="last"``). GPO-VAE is ``gpo_linear`` with one hop.
    - *standard PyG layers* (anything else): built as ``cls(in_channels, out_channels,
      **options)`` with channels ``1 -> hidden -> ... -> 1`` and LeakyReLU between layers, and
      called exactly like a PyG layer, ``layer(x [N, F], edge_index [2, M], edge_weight [M])``.
      The effect of a condition is the stack's output for its dosages minus its output for no
      perturbation, ``f(d) - f(0)`` (so a control has no effect, whatever the layers' biases);
      see :meth:`_standard` for how it is computed over the pairs the perturbations reach
      rather than over P x C copies of the GRN.

    Self-loops (``loops``): ``"walk"`` (GPO-VAE) walks them like any edge, at every hop;
    ``"own"`` reads a node's self-loop as its own change when it is perturbed, the term
    ``w_rr d_r`` added once to the effects and never walked on (otherwise, over two hops, a
    target j's own-change loop would multiply what reaches j, and a perturbed node's would feed
    its own change into its targets). The two are the same with one hop. ``"own"`` needs linear
    sum layers (``gpo_linear`` with ``aggr: add``, ``combine: sum``).

    Shapes: dosages ``[C, V]``, ``edge_weight`` ``[P, E]`` -> latent effects ``[P, C, V]``.
    """

    def __init__(self, layer: str = "gpo_linear", hops: int = 1, combine: str = "sum",
                 hidden: int = 16, options: Optional[Dict[str, Any]] = None, loops: str = "walk"):
        super().__init__()
        cls = LAYERS.get(layer)
        self.layer_name = layer
        self.combine = combine
        self.batched = bool(getattr(cls, "batched", False))
        if loops not in ("walk", "own"):
            raise RecipeError(f"model.effect.loops={loops!r}: use walk or own")
        self.own_loops = loops == "own" and hops > 1  # identical with one hop: keep that path
        options = dict(options or {})
        try:
            if self.batched:
                self.layers = nn.ModuleList(cls(**options) for _ in range(hops))
            else:
                dims = [1] + [hidden] * (hops - 1) + [1]
                self.layers = nn.ModuleList(cls(dims[k], dims[k + 1], **options) for k in range(hops))
                self.act = nn.LeakyReLU()
        except TypeError as exc:  # an option the layer does not take (or a wrong type)
            import inspect

            params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
            raise RecipeError(
                f"model.effect.options {sorted(options)} do not fit the layer '{layer}' ({str(exc).split(': ')[-1]}); "
                f"its options are: {', '.join(params) or 'none'}") from None
        if self.own_loops and not (self.pair_layers and combine == "sum"):
            raise RecipeError(f"model.effect.loops=own needs linear sum layers (gpo_linear with aggr: add and "
                              f"model.effect.combine=sum), not '{layer}' with combine={combine}; use loops=walk")

    @property
    def local_support(self) -> bool:
        """Whether effects are structurally sparse (see :class:`EffectPlan`)."""
        return self.batched and all(getattr(layer, "local_support", False) for layer in self.layers)

    @torch.no_grad()
    def plan(self, dosage: Tensor, edge_index: Tensor, num_nodes: int, max_density: float = 0.1) -> EffectPlan:
        """The :class:`EffectPlan` of dosages ``[C, V]`` over ``edge_index``."""
        if not self.local_support:
            return EffectPlan(hop_edges=[None] * len(self.layers))
        if self.own_loops:  # plan the walks without the self-loops, then their edge ids in the GRN
            walked, ids, loop = loop_split(edge_index, num_nodes)
            plan = self._plan(dosage, walked, num_nodes, max_density, loop)
            plan.hop_edges = [ids if keep is None else ids[keep] for keep in plan.hop_edges]
            for hop in plan.hops:
                hop.edge = ids[hop.edge]
            return plan
        return self._plan(dosage, edge_index, num_nodes, max_density)

    def _plan(self, dosage: Tensor, edge_index: Tensor, num_nodes: int, max_density: float,
              loop: Optional[Tensor] = None) -> EffectPlan:
        V, E = num_nodes, edge_index.shape[1]
        groups = out_edges(edge_index, V)
        active = torch.zeros(V, dtype=torch.bool, device=dosage.device)
        active[dosage_support(dosage)[1]] = True  # nodes with a possibly non-zero state, any condition
        rows = active.clone()  # the perturbed nodes, then every node a hop starts from
        hop_edges: List[Optional[Tensor]] = []
        for layer in self.layers:
            rows |= active
            keep = groups.edges_of(torch.nonzero(active).flatten())  # the edges leaving them
            skip = getattr(layer, "zero_preserving", False) and keep.numel() < E
            hop_edges.append(keep if skip else None)
            nxt = torch.zeros_like(active)
            nxt[edge_index[1][keep]] = True
            active = nxt
        plan = EffectPlan(hop_edges, rows)
        self._plan_support(plan, dosage, edge_index, V, max_density, loop)
        return plan

    def _plan_support(self, plan: EffectPlan, dosage: Tensor, edge_index: Tensor, V: int,
                      max_density: float, loop: Optional[Tensor] = None) -> None:
        """Fill the plan's ``support``, ``inputs``, ``hops`` and ``sparse``, unless the hops over
        the pairs would pass more than ``2 C V`` (pair, edge) combinations; with ``loop`` (each
        node's self-loop edge id, own loops), the own-change terms' places too."""
        C = dosage.shape[0]
        groups = out_edges(edge_index, V)  # cached: the same as plan's
        keys = _keys(dosage)
        inputs = keys
        hops, outputs = [], []
        for k in range(len(self.layers)):
            if groups.count(keys) > 2 * C * V:
                return
            nxt, src, edge, dst = groups.expand(keys)
            if dst is None:  # one combination per output pair, already in CSR order
                dst = torch.arange(nxt.numel(), device=nxt.device)
            else:
                by_dst = torch.argsort(dst, stable=True)  # pair edges by (target, source): CSR order
                src, edge, dst = src[by_dst], edge[by_dst], dst[by_dst]
            hops.append(SparseHop(src, dst, edge, keys.numel(), nxt.numel()))
            if self.combine == "sum" or k == len(self.layers) - 1:
                outputs.append((k, nxt))
            keys = nxt
        looped = None
        if loop is not None:
            looped = torch.nonzero(loop[inputs % V] >= 0).flatten()
            outputs.append((-1, inputs[looped]))
        if len(outputs) == 1:  # the one output is sorted and unique already
            support = outputs[0][1]
            hops[outputs[0][0]].out_pos = torch.arange(support.numel(), device=support.device)
        else:
            support = torch.unique(torch.cat([o for _, o in outputs]))
            for k, out in outputs:
                if k >= 0:
                    hops[k].out_pos = torch.searchsorted(support, out)
        if looped is not None:
            plan.loop_inputs, plan.loop_edges = looped, loop[inputs[looped] % V]
            plan.loop_pos = torch.searchsorted(support, inputs[looped])
        plan.support = torch.stack([support // V, support % V])
        plan.inputs = torch.stack([inputs // V, inputs % V])
        plan.hops = hops
        plan.sparse = support.numel() <= max_density * C * V

    @property
    def pair_layers(self) -> bool:
        """Whether the layers can run over (condition, node) pairs: each layer's output at a node
        is a sum of messages from its in-neighbours that vanish with their source's state
        (``local_support`` and ``zero_preserving``)."""
        return self.local_support and all(getattr(layer, "zero_preserving", False) for layer in self.layers)

    def compute(self, dosage: Tensor, edge_index: Tensor, edge_weight: Tensor,
                plan: EffectPlan) -> Union[Tensor, SparseEffects]:
        """Effects as :class:`SparseEffects` when the plan says they are sparse, else dense
        ``[P, C, V]``.

        When the plan has a support and the layers allow it (:attr:`pair_layers`), the layers run
        over the plan's (condition, node) pairs only: hop k is a graph from the pairs with a
        possibly non-zero state to the pairs they reach, each pair edge weighted by its GRN edge.
        This costs O(pairs x P) against O(E x C x P) for products over the whole GRN, whether the
        effects end up sparse or not.
        """
        if not self.batched:
            return self._standard(dosage, edge_index, edge_weight)
        if plan.support is None:
            return self.forward(dosage, edge_index, edge_weight, plan)
        C, V = dosage.shape
        P = edge_weight.shape[0]
        if not self.pair_layers:
            z = self.forward(dosage, edge_index, edge_weight, plan)
            return SparseEffects(z[:, plan.support[0], plan.support[1]], plan.support, C, V) if plan.sparse else z
        x = dosage[plan.inputs[0], plan.inputs[1]]
        out = edge_weight.new_zeros(P, plan.support.shape[1])
        if plan.loop_pos is not None:  # own loops: each perturbed node's own change, once
            own = x[plan.loop_inputs].unsqueeze(0) * edge_weight[:, plan.loop_edges]
            out = out.index_add(1, plan.loop_pos, own)
        x = x[:, None, None].expand(-1, P, 1)  # [n_0, P, 1]: pairs as nodes, one "condition"
        for layer, hop in zip(self.layers, plan.hops):
            ei = torch.stack([hop.src, hop.dst + hop.n_in])
            x_in = torch.cat([x, x.new_zeros(hop.n_out, P, 1)])
            x = layer(x_in, ei, edge_weight[:, hop.edge].t())[hop.n_in:]  # [n_out, P, 1]
            if hop.out_pos is not None:
                out = out.index_add(1, hop.out_pos, x[:, :, 0].t())
        effects = SparseEffects(out, plan.support, C, V)
        return effects if plan.sparse else effects.dense()

    def forward(self, dosage: Tensor, edge_index: Tensor, edge_weight: Tensor,
                plan: Optional[EffectPlan] = None) -> Tensor:
        """Effects ``[P, C, V]`` of dosages ``[C, V]`` under edge weights ``[P, E]``.

        ``plan`` (from :meth:`plan` for the same dosages and edges) is computed when not given.
        """
        if not self.batched:
            z = self._standard(dosage, edge_index, edge_weight)
            return z.dense() if isinstance(z, SparseEffects) else z
        if plan is None:
            plan = self.plan(dosage, edge_index, dosage.shape[1])
        x = dosage.t().unsqueeze(1).expand(-1, edge_weight.shape[0], -1)  # [V, P, C]
        w = edge_weight.t()  # [E, P]
        out = None
        for layer, keep in zip(self.layers, plan.hop_edges):
            if keep is None and self.own_loops:  # every edge but the self-loops
                keep = loop_split(edge_index, dosage.shape[1])[1]
            if keep is None:
                x = layer(x, edge_index, w)
            else:  # edges leaving nodes whose state is structurally zero carry nothing (exact)
                x = layer(x, edge_index[:, keep], w[keep])
            out = x if (out is None or self.combine == "last") else out + x
        if self.own_loops:  # each perturbed node's own change, once (the hops skipped the loops)
            loop = loop_split(edge_index, dosage.shape[1])[2]
            nodes = torch.nonzero(loop >= 0).flatten()
            own = dosage.t()[nodes].unsqueeze(1) * w[loop[nodes]].unsqueeze(-1)  # [n, P, C]
            out = out.index_add(0, nodes, own)
        return out.permute(1, 2, 0)  # [P, C, V]

    def _standard(self, dosage: Tensor, edge_index: Tensor, edge_weight: Tensor,
                  max_density: float = 0.1) -> Union[Tensor, SparseEffects]:
        """Effects ``f(d) - f(0)`` of a stack of standard PyG layers, exactly, over the pairs the
        perturbations reach.

        A layer's output at node j depends on j's own state, on the states of its in-neighbours
        along j's in-edges and on their weights, and (GCN's symmetric normalisation) on the
        in-edges of those in-neighbours. So a condition's state after layer k differs from the
        unperturbed one only on ``R_k``, its perturbed nodes and the nodes they reach in k steps.
        Each layer runs once over one graph holding, per particle, (a) a copy of the whole GRN in
        the unperturbed state (``f(0)``, shared by all conditions) and (b) one node per pair
        ``(c, j)`` of ``R_k`` with every in-edge of j: from the pair ``(c, i)`` when i is in
        ``R_k`` (whose own in-edges are then complete too), else from node i of the unperturbed
        copy. That is ``P (E + sum_{(c, j) in R_k} indeg(j))`` edges instead of the
        ``P C E`` of one copy per particle and condition; the result is the same for every
        parameter value. Returns :class:`SparseEffects` on ``R_K`` when that is at most
        ``max_density`` of ``C x V``, else dense ``[P, C, V]``.
        """
        P, E = edge_weight.shape
        C, V = dosage.shape
        device = dosage.device
        src, tgt = edge_index
        in_order, in_ptr = in_edges(edge_index, V)  # edge ids grouped by target
        groups = out_edges(edge_index, V)
        keys = _keys(dosage)  # R_0
        base = edge_weight.new_zeros(P * V, 1)  # the unperturbed state, per particle
        state = dosage.flatten()[keys].repeat(P).unsqueeze(1)  # [P * |R_0|, 1], particle-major
        width = max(max(getattr(layer, "out_channels", 1) for layer in self.layers), 1)
        cur = keys
        for k, layer in enumerate(self.layers):
            prev = cur
            reached, _, _, _ = groups.expand(prev)
            cur = torch.unique(torch.cat([prev, reached]))  # R_k, sorted
            n = cur.numel()
            c_cur, v_cur = cur // V, cur % V
            deg = in_ptr[v_cur + 1] - in_ptr[v_cur]
            total = int(deg.sum())
            need = P * (E + total) * (24 + 3 * 4 * width)
            if need > STANDARD_LAYER_BYTES:
                raise RecipeError(
                    f"model.effect.layer={self.layer_name}: hop {k + 1} reaches {n:,} (condition, node) pairs with "
                    f"{total:,} in-edges, over {P} particles (about {need / 2**30:.2g} GB of messages, above the "
                    f"{STANDARD_LAYER_BYTES / 2**30:.2g} GB bound); use a particle-batched layer (gpo_linear), "
                    f"fewer hops (model.effect.hops), fewer conditions per batch (train.batch_size), fewer "
                    f"particles (train.particles), a smaller model.effect.hidden or a sparser GRN "
                    f"(grn.edges=knn with a smaller grn.knn)")
            # the pairs' inputs: their state after the previous layer, unperturbed outside R_{k-1}
            at = torch.searchsorted(prev, cur).clamp(max=max(prev.numel() - 1, 0))
            hit = (prev[at] == cur) if prev.numel() else torch.zeros_like(cur, dtype=torch.bool)
            F = base.shape[1]
            x_pair = base.view(P, V, F)[:, v_cur].clone()
            x_pair[:, hit] = state.view(P, prev.numel(), F)[:, at[hit]]
            # every in-edge of every pair: from the pair (c, i) when it is in R_k, else from node i
            # of the unperturbed copy
            tpos = torch.repeat_interleave(torch.arange(n, device=device), deg)
            slot = torch.repeat_interleave(in_ptr[v_cur] - (torch.cumsum(deg, 0) - deg), deg)
            slot = slot + torch.arange(total, device=device)
            e_ids = in_order[slot]
            s_key = c_cur[tpos] * V + src[e_ids]
            spos = torch.searchsorted(cur, s_key).clamp(max=max(n - 1, 0))
            s_in = cur[spos] == s_key
            offset = torch.arange(P, device=device).unsqueeze(1)
            pair_src = torch.where(s_in, P * V + offset * n + spos, offset * V + src[e_ids])  # [P, total]
            pair_dst = P * V + offset * n + tpos
            base_src, base_dst = offset * V + src, offset * V + tgt  # [P, E]
            ei = torch.stack([torch.cat([base_src.flatten(), pair_src.flatten()]),
                              torch.cat([base_dst.flatten(), pair_dst.flatten()])])
            w = torch.cat([edge_weight.flatten(), edge_weight[:, e_ids].flatten()])
            out = layer(torch.cat([base, x_pair.reshape(P * n, F)]), ei, w)
            if k < len(self.layers) - 1:
                out = self.act(out)
            base, state = out[:P * V], out[P * V:]
        values = state.view(P, cur.numel(), base.shape[1])[..., 0] - base.view(P, V, -1)[:, cur % V, 0]
        effects = SparseEffects(values, torch.stack([cur // V, cur % V]), C, V)
        return effects if cur.numel() <= max_density * C * V else effects.dense()


def propagate(h: Tensor, edge_index: Tensor, edge_value: Tensor, num_nodes: int) -> Tensor:
    """One sparse hop ``h A`` with ``A[i, j] = edge_value[e]`` for e = (i -> j). ``h``: ``[C, V]``."""
    src, tgt = edge_index
    msg = h[:, src] * edge_value  # [C, E]
    return scatter(msg, tgt, dim=1, dim_size=num_nodes, reduce="sum")


def khop_rows(dosage: Tensor, edge_index: Tensor, edge_value: Tensor, num_nodes: int, hops: int,
              pair_budget: float = 1 / 64) -> Tensor:
    """Rows ``D S`` of the GRN alignment matrix without forming S.

    ``S = sum_{k=1..K+1} A^k / V^(k-1)`` (GPO-VAE, with A the edge logits, zero off the edge
    set) is never built: ``D S = sum_k y_k`` with ``y_1 = D A`` and ``y_{k+1} = y_k A / V``,
    i.e. K + 1 propagations of the ``[C, V]`` dosage rows over the E edges.

    - Dense edge sets (E >= V^2 / 4): A is no larger than the edge list, and the propagations
      are matrix products.
    - Otherwise the first hops, while the rows are sparse (perturbed nodes, then their
      targets, ...) and a hop touches at most ``pair_budget * C * E`` (row entry, edge) pairs,
      run over those pairs only; the rest are sparse-dense products with A stored as its E
      edges, with O(E) gradients for the edge values.
    """
    V = num_nodes
    C = dosage.shape[0]
    E = edge_value.numel()
    if 4 * E >= V * V:
        A = dosage.new_zeros(V, V).index_put((edge_index[0], edge_index[1]), edge_value, accumulate=True)
        y = dosage @ A
        total = y
        for _ in range(hops):
            y = (y @ A) / V
            total = total + y
        return total
    groups = out_edges(edge_index, V)
    keys = _keys(dosage)
    vals = dosage.reshape(-1)[keys]
    total = dosage.new_zeros(C * V)
    k = 0
    while k <= hops and groups.count(keys) <= pair_budget * C * E:  # sparse rows
        keys, src, edge, dst = groups.expand(keys)
        msg = vals[src] * edge_value[edge]
        vals = msg if dst is None else msg.new_zeros(keys.numel()).index_add(0, dst, msg)
        if k > 0:
            vals = vals / V
        total = total.index_add(0, keys, vals)
        k += 1
    if k > hops:
        return total.view(C, V)
    # dense rows, kept transposed ([V, C]) so each hop is one CSR product A^T y^T
    y_t = dosage.new_zeros(C * V).index_copy(0, keys, vals)
    y_t = y_t.view(C, V).t().contiguous()
    total_t = None
    for j in range(k, hops + 1):
        y_t = edge_matmul(edge_index, edge_value, y_t, V)
        if j > 0:
            y_t = y_t / V
        total_t = y_t if total_t is None else total_t + y_t
    return total.view(C, V) + total_t.t()
