"""Edge-list sparse-dense products with gradients for the edge values, in O(E) memory.

``edge_matmul(edge_index, values, x)`` computes ``out[j] = sum_{e = (i -> j)} values[e] x[i]``
(``A^T x`` for the weighted adjacency A). torch's own backward of a sparse product with
respect to the sparse values goes through a dense ``[V, V]`` gradient; here it is a sampled
dense-dense product over the E edges instead, and the gradient for ``x`` is the transposed
sparse product.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def _coo(rows: Tensor, cols: Tensor, values: Tensor, n: int) -> Tensor:
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n))


class _EdgeMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, edge_index: Tensor, values: Tensor, x: Tensor, num_nodes: int) -> Tensor:
        src, tgt = edge_index
        ctx.save_for_backward(edge_index, values, x)
        ctx.num_nodes = num_nodes
        return torch.sparse.mm(_coo(tgt, src, values, num_nodes), x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        edge_index, values, x = ctx.saved_tensors
        src, tgt = edge_index
        n = ctx.num_nodes
        grad_values = grad_x = None
        if ctx.needs_input_grad[1]:
            # d out[tgt_e] / d values_e = x[src_e]:  grad_e = <grad[tgt_e], x[src_e]>
            order = torch.argsort(tgt * n + src)
            t, s = tgt[order], src[order]
            crow = torch.zeros(n + 1, dtype=torch.long, device=t.device)
            crow[1:] = torch.cumsum(torch.bincount(t, minlength=n), 0)
            with warnings.catch_warnings():  # CSR is flagged beta by torch
                warnings.simplefilter("ignore")
                pattern = torch.sparse_csr_tensor(crow, s, torch.zeros_like(values), (n, n))
                sampled = torch.sparse.sampled_addmm(pattern, grad, x.t()).values()
            grad_values = torch.empty_like(values)
            grad_values[order] = sampled
        if ctx.needs_input_grad[2]:
            grad_x = torch.sparse.mm(_coo(src, tgt, values, n), grad)
        return None, grad_values, grad_x, None


def edge_matmul(edge_index: Tensor, values: Tensor, x: Tensor, num_nodes: int) -> Tensor:
    """``out[j] = sum_{e = (i -> j)} values[e] * x[i]`` for ``x`` ``[V, F]``: ``[V, F]``."""
    return _EdgeMatmul.apply(edge_index, values, x.contiguous(), num_nodes)
