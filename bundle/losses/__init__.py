"""The training losses: stage 1's alignment of e_MSC with e_r, stage 2's soft-mask-weighted noise loss, and
VG-MedGen's intensity-distribution loss and its stage-V (visual) and stage-T (text) disentanglement objectives."""

from bundle.losses.alignment import alignment_loss
from bundle.losses.intensity_distribution import IntensityDistributionLoss
from bundle.losses.soft_masked_noise import SoftMaskedNoiseLoss
from bundle.losses.vgmedgen_text import TextAlignmentLoss
from bundle.losses.vgmedgen_visual import VisualDisentangleLoss

__all__ = [
    "IntensityDistributionLoss",
    "SoftMaskedNoiseLoss",
    "TextAlignmentLoss",
    "VisualDisentangleLoss",
    "alignment_loss",
]
