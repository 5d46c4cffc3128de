"""Edge-list sparse-dense products with gradients for the edge values, in O(E) memory.

``edge_matmul(edge_index, values, x)`` computes ``out[j] = sum_{e = (i -> j)} values[e] x[i]``
(``A^T x`` for the weighted adjacency A). torch's own backward of a sparse product with
respect to the sparse values goes through a dense ``[V, V]`` gradient; here it is a sampled
dense-dense product over the E edges instead, and the gradient for ``x`` is the transposed
sparse product.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch
from torch import Tensor


def _sorted_order(rows: Tensor, cols: Tensor, n_cols: int) -> Optional[Tensor]:
    """The permutation sorting coordinates by (row, column), or None if they already are."""
    key = rows * n_cols + cols
    if key.numel() < 2 or bool((key[1:] >= key[:-1]).all()):
        return None
    return torch.argsort(key)


def stable_order(keys: Tensor, n_keys: int) -> Tensor:
    """``torch.argsort(keys, stable=True)`` for integer ``keys`` in ``[0, n_keys)``.

    On CPU, a least-significant-digit radix sort over 16-bit digits (numpy's stable sort of
    ``uint16`` is a counting sort): one pass for ``n_keys <= 65,536``, two up to ``2**32``. For
    the tens of thousands of keys of a step's sparse products this is about 10x faster than a
    comparison sort. Elsewhere (or for wider keys) torch's own stable sort."""
    if keys.device.type != "cpu" or n_keys > 1 << 32 or keys.numel() < 2:
        return torch.argsort(keys, stable=True)
    k = keys.numpy()
    order = np.argsort((k & 0xFFFF).astype(np.uint16), kind="stable")
    if n_keys > 1 << 16:
        order = order[np.argsort((k[order] >> 16).astype(np.uint16), kind="stable")]
    return torch.from_numpy(order)


def _transposed_order(rows: Tensor, cols: Tensor, n_cols: int) -> Optional[Tensor]:
    """For coordinates sorted by (row, column): the permutation sorting them by (column, row),
    or None if they already are. A stable sort by column alone keeps the rows in order within
    each column."""
    if cols.numel() < 2 or bool((cols[1:] >= cols[:-1]).all()):
        return None
    return stable_order(cols, n_cols)


def _take(t: Tensor, order: Optional[Tensor]) -> Tensor:
    return t if order is None else t[order]


class _SparseMatmul(torch.autograd.Function):
    # CSR products throughout: on CPU they run 2-3x faster than COO ones (no coalescing)

    @staticmethod
    def forward(ctx, rows: Tensor, cols: Tensor, values: Tensor, x: Tensor, n_rows: int) -> Tensor:
        n_cols = x.shape[0]
        order = _sorted_order(rows, cols, n_cols)
        r, c = _take(rows, order), _take(cols, order)
        out = _csr(r, c, _take(values, order), (n_rows, n_cols)) @ x
        ctx.save_for_backward(r, c, values, x, order)
        ctx.n_rows = n_rows
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        r, c, values, x, order = ctx.saved_tensors
        n_rows, n_cols = ctx.n_rows, x.shape[0]
        grad_values = grad_x = None
        if ctx.needs_input_grad[2]:
            # d out[r_e] / d values_e = x[c_e]:  grad_e = <grad[r_e], x[c_e]>, a sampled product
            pattern = _csr(r, c, values.new_zeros(values.shape), (n_rows, n_cols))
            sampled = torch.sparse.sampled_addmm(pattern, grad.contiguous(), x.t()).values()
            if order is None:
                grad_values = sampled
            else:
                grad_values = torch.empty_like(values)
                grad_values[order] = sampled
        if ctx.needs_input_grad[3]:  # S^T grad
            v = _take(values, order)
            order_t = _transposed_order(r, c, n_cols)
            grad_x = _csr(_take(c, order_t), _take(r, order_t), _take(v, order_t), (n_cols, n_rows)) @ grad
        return None, None, grad_values, grad_x, None


def sparse_matmul(rows: Tensor, cols: Tensor, values: Tensor, x: Tensor, n_rows: int) -> Tensor:
    """``S @ x`` for the ``[n_rows, x.shape[0]]`` sparse matrix ``S[rows_e, cols_e] = values_e``.

    Duplicate coordinates add up. Gradients: for ``values`` a sampled product over the given
    coordinates (O(nnz) memory), for ``x`` the transposed sparse product.
    """
    return _SparseMatmul.apply(rows, cols, values, x.contiguous(), int(n_rows))


def edge_matmul(edge_index: Tensor, values: Tensor, x: Tensor, num_nodes: int) -> Tensor:
    """``out[j] = sum_{e = (i -> j)} values[e] * x[i]`` for ``x`` ``[V, F]``: ``[V, F]``."""
    src, tgt = edge_index
    return sparse_matmul(tgt, src, values, x, num_nodes)


def stacked_rows(index: Tensor, copies: int, n_rows: int) -> Tensor:
    """Rows ``c * n_rows + index`` of ``index`` in ``copies`` stacked ``n_rows``-row blocks (one
    per particle), copy-major and flattened: ``[copies * len(index)]``, sorted if ``index`` is."""
    return (torch.arange(copies, device=index.device).unsqueeze(1) * n_rows + index).reshape(-1)


def row_pointer(rows: Tensor, n_rows: int) -> Tensor:
    """CSR row pointer ``[n_rows + 1]`` of row indices: row r's entries are ``ptr[r]:ptr[r + 1]``
    once the entries are sorted by row."""
    ptr = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    return ptr


def _csr(rows: Tensor, cols: Tensor, values: Tensor, shape) -> Tensor:
    """CSR matrix from (row-sorted) coordinates."""
    crow = row_pointer(rows, shape[0])
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
            order = _transposed_order(rows, cols, b.shape[0])
            grad_b = torch.sparse.mm(_csr(_take(cols, order), _take(rows, order), _take(grad, order),
                                          (b.shape[0], a.shape[0])), a)
        return None, None, grad_a, grad_b


def edge_scores(rows: Tensor, cols: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``<a[rows_e], b[cols_e]>`` for every pair (rows sorted ascending, then cols): ``[E]``.

    A sampled dense-dense product in O(E) memory, with a backward of two sparse-dense products
    (torch's own backward of the sampled product is several times slower on CPU).
    """
    return _EdgeScores.apply(rows, cols, a.contiguous(), b.contiguous())
