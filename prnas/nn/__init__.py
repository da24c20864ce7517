"""Torch modules built from ``prnas.space`` op values, and weight transfer between them."""

from prnas.nn.ops import ConvOp, FactorizedReduce, SepBlock, build_op
from prnas.nn.transfer import transfer_weights

__all__ = ["ConvOp", "FactorizedReduce", "SepBlock", "build_op", "transfer_weights"]
