"""Conditional normalisation (`cbn`): class-conditional norm layers as a way of conditioning a diffusion U-Net,
from "Towards Conditionality for Probabilistic Diffusion Models" (paper 003), after Brock et al. 2018."""

from __future__ import annotations

from torch import Tensor

from protobench import Conditioning, ConditionSpec
from protobench_conditioners.basic import ClassEmbedding


class ConditionalNorm(ClassEmbedding):
    """CBN: a class embedding (and a null embedding for CFG) emitted as `Conditioning.norm`.

    The denoiser maps it, per normalisation layer, to a scale and shift that replace the layer's own
    affine parameters: BN_γ(y),β(y)(x) = γ(y) (x − E[x]) / sqrt(var x) + β(y)  (paper 003, CBN equation).
    The U-Net normalises by groups rather than batches, so this is conditional group norm.
    """

    name = "cbn"

    def __init__(self, num_classes: int, dim: int = 64, null: str = "learned"):
        super().__init__(num_classes, dim=dim, null=null)
        self.spec = ConditionSpec(norm_dim=dim)

    def forward(self, labels: Tensor) -> Conditioning:
        return Conditioning(norm=super().forward(labels).emb)
