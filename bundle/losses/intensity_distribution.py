"""VG-MedGen's intensity-distribution loss: the paper's colour loss (after Med-Art) for grey MRI.

``L = mean_b sum_c [(mu_c(x_gen) - mu_c(x_real))^2 + (sigma_c(x_gen) - sigma_c(x_real))^2]``: per image and
channel, the mean and the spread of the generated image against the real one, optionally inside a (soft) mask.
It is differentiable in the generated image, so it trains whatever produced it (the denoiser through a one-step
estimate x0 or through sampling steps kept on the graph). The authors' release computed its generated image under
``torch.no_grad()``, which made the term a constant with no gradient; ``tests/losses/test_intensity_distribution.py``
checks that this loss moves a generated image's statistics and that such a detached version does not.
"""

from __future__ import annotations

import torch
from torch import nn

REDUCTIONS = ("mean", "none")


def masked_moments(
    image: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image, per-channel mean and standard deviation, weighted by ``mask``.

    Args:
        image: ``(B, C, *spatial)``, any intensity unit.
        mask: ``(B, 1, *spatial)`` or ``(B, C, *spatial)`` weights in [0, 1], or None (every pixel counts 1).
        eps: added to the variance before the square root, so the spread has a finite gradient on a constant
            image.

    Returns:
        ``(mean, std)``, each ``(B, C)`` in the image's unit.
    """
    values = image.float().flatten(2)
    if mask is None:
        weights = torch.ones_like(values)
    else:
        weights = mask.float().expand_as(image).flatten(2)
    mass = weights.sum(dim=2)
    if (mass <= 0).any():
        empty = torch.nonzero((mass <= 0).any(dim=1)).flatten().tolist()
        raise ValueError(f"the mask of batch items {empty} is empty; their intensity statistics are undefined")
    mean = (weights * values).sum(dim=2) / mass
    variance = (weights * (values - mean.unsqueeze(2)).pow(2)).sum(dim=2) / mass
    return mean, torch.sqrt(variance + eps)


class IntensityDistributionLoss(nn.Module):
    """``sum_c (mu_c(gen) - mu_c(real))^2 + (sigma_c(gen) - sigma_c(real))^2`` per image, reduced over the batch.

    Shapes: ``generated`` and ``real`` ``(B, C, *spatial)`` (2-D or 3-D), the same shape; ``mask`` ``(B, 1 or C,
    *spatial)`` in [0, 1] on the same grid, or None. The value is in squared intensity units (with images in
    [0, 1], 0.01 is a 0.1 difference of mean or spread). ``reduction`` ``"mean"`` (a scalar) or ``"none"`` (``(B,)``).
    The real image's statistics are targets: no gradient flows into ``real``.
    """

    def __init__(self, reduction: str = "mean", eps: float = 1e-6) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.eps = eps

    def forward(self, generated: torch.Tensor, real: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if generated.shape != real.shape or generated.ndim < 3:
            raise ValueError(
                f"generated {tuple(generated.shape)} and real {tuple(real.shape)} must be the same (B, C, *spatial)"
            )
        if mask is not None and (mask.shape[0] != generated.shape[0] or mask.shape[2:] != generated.shape[2:]):
            raise ValueError(f"mask {tuple(mask.shape)} is not on the images' grid {tuple(generated.shape)}")
        if not torch.isfinite(generated).all() or not torch.isfinite(real).all():
            raise ValueError("the generated or the real image has NaN or infinite values")
        mean, std = masked_moments(generated, mask, self.eps)
        with torch.no_grad():
            real_mean, real_std = masked_moments(real, mask, self.eps)
        per_image = ((mean - real_mean).pow(2) + (std - real_std).pow(2)).sum(dim=1)
        return per_image.mean() if self.reduction == "mean" else per_image
