"""Projection and prediction heads shared by the joint-embedding methods."""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Sequential):
    """MLP ``in_dim -> hidden_dim -> ... -> out_dim`` with BN and ReLU between layers.

    SimCLR (Chen et al. 2020) uses two layers with a ReLU in between; its released implementation
    adds batch norm after each hidden linear layer, which we follow (``batch_norm=True``). The
    last layer has no activation and no BN unless ``last_bn`` (as in SimSiam's projector).

    Args:
        in_dim: backbone feature dimension.
        hidden_dim: width of the hidden layers.
        out_dim: output dimension.
        num_layers: number of linear layers (>= 1).
        batch_norm: batch norm after every hidden linear layer.
        last_bn: batch norm (without affine parameters) after the last layer.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_bn: bool = False,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            last = i == num_layers - 1
            layers.append(nn.Linear(d_in, d_out, bias=last or not batch_norm))
            if not last:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.ReLU(inplace=True))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_dim) -> (B, out_dim)."""
        return super().forward(x)
