"""A new GNN effect layer written by a user, registered, selected in a recipe and trained.

    python examples/custom_layer.py [--epochs 20] [--out runs/custom_layer]

The layer is an ordinary PyTorch Geometric ``MessagePassing`` class plus one line,
``@grnvae.register_layer("gated")``. A recipe selects it with ``model.effect.layer: gated`` and
lists this file under ``plugins:`` so the registration runs before the model is built.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import Linear
from torch_geometric.nn import MessagePassing

import grnvae

HERE = Path(__file__).resolve().parent


@grnvae.register_layer("gated", overwrite=True)
class GatedEffect(MessagePassing):
    r"""Gated propagation: each target learns how much of its regulators' signal to let in.

    .. math::
        h'_j = \sigma(g^\top h_j + c) \odot \Theta \sum_{i \to j} w_{ij} h_i + \Theta_0 h_j

    Args:
        in_channels (int): input features per node.
        out_channels (int): output features per node.

    Shapes:
        - **input:** ``x`` ``[N, in_channels]``, ``edge_index`` ``[2, E]``, ``edge_weight`` ``[E]``
        - **output:** ``[N, out_channels]``
    """

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__(aggr="add", **kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lin = Linear(in_channels, out_channels)
        self.root = Linear(in_channels, out_channels, bias=False)
        self.gate = Linear(in_channels, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for m in (self.lin, self.root, self.gate):
            m.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor) -> Tensor:
        agg = self.propagate(edge_index, x=x, edge_weight=edge_weight)
        return torch.sigmoid(self.gate(x)) * self.lin(agg) + self.root(x)

    def message(self, x_j: Tensor, edge_weight: Tensor) -> Tensor:
        return edge_weight.unsqueeze(-1) * x_j


RECIPE = """\
# quickstart with the user's gated layer as the effect module
defaults: [quickstart]
name: custom_layer
plugins: [{plugin}]
model:
  effect: {{layer: gated, hops: 2, hidden: 8}}
train: {{max_epochs: {epochs}, progress_bar: false}}
"""


def main(argv=None) -> grnvae.Run:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/custom_layer")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = out.parent / f"{out.name}.yaml"
    recipe.write_text(RECIPE.format(plugin=Path(__file__).resolve(), epochs=args.epochs))
    print(textwrap.indent(recipe.read_text(), "  "))
    run = grnvae.train(recipe, out=out, overwrite=True)
    print(f"effect module: {run.model.effect.layers}")
    print(f"val loss {run.metrics['val']['loss']:.3f}; learned GRN written to {run.path / 'grn.tsv'}")
    return run


if __name__ == "__main__":
    main()
