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
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False)


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
            pattern = _csr(tgt[order], src[order], torch.zeros_like(values), (n, n))
            sampled = torch.sparse.sampled_addmm(pattern, grad, x.t()).values()
            grad_values = torch.empty_like(values)
            grad_values[order] = sampled
        if ctx.needs_input_grad[2]:
            grad_x = torch.sparse.mm(_coo(src, tgt, values, n), grad)
        return None, grad_values, grad_x, None


def edge_matmul(edge_index: Tensor, values: Tensor, x: Tensor, num_nodes: int) -> Tensor:
    """``out[j] = sum_{e = (i -> j)} values[e] * x[i]`` for ``x`` ``[V, F]``: ``[V, F]``."""
    return _EdgeMatmul.apply(edge_index, values, x.contiguous(), num_nodes)


def _csr(rows: Tensor, cols: Tensor, values: Tensor, shape) -> Tensor:
    """CSR matrix from (row-sorted) coordinates."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0)
    with warnings.catch_warnings():  # CSR is flagged beta by torch
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


class _EdgeScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: Tensor, cols: Tensor, a: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(rows, cols, a, b)
        pattern = _csr(rows, cols, a.new_zeros(rows.numel()), (a.shape[0], b.shape[0]))
        return torch.sparse.sampled_addmm(pattern, a, b.t()).values()

    @staticmethod
    def backward(ctx, grad: Tensor):
        rows, cols, a, b = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[2]:  # grad_a[r] = sum_e grad_e b[c_e]
            grad_a = torch.sparse.mm(_csr(rows, cols, grad, (a.shape[0], b.shape[0])), b)
        if ctx.needs_input_grad[3]:  # grad_b[c] = sum_e grad_e a[r_e]
            order = torch.argsort(cols * a.shape[0] + rows)
            grad_b = torch.sparse.mm(_csr(cols[order], rows[order], grad[order], (b.shape[0], a.shape[0])), a)
        return None, None, grad_a, grad_b


def edge_scores(rows: Tensor, cols: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``<a[rows_e], b[cols_e]>`` for every pair (rows sorted ascending, then cols): ``[E]``.

    A sampled dense-dense product in O(E) memory, with a backward of two sparse-dense products
    (torch's own backward of the sampled product is several times slower on CPU).
    """
    return _EdgeScores.apply(rows, cols, a.contiguous(), b.contiguous())
