"""VG-MedGen's stage-V objective (the paper's Eq. 1; its weights from the authors' code, the perceptual term
left out: its VGG19 weights would be a run-time download).

``L = rec * L1(x_rec, x) + kl * KL(N(mu, sigma^2) || N(0, I)) + dice * Dice(seg_head, labels) + reg * L1(mu(x_rec), z)``
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.losses import DiceLoss
from torch import nn


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over the latent dimensions, averaged over the batch
    (``mu``, ``logvar``: ``(B, z_dim)``)."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


class VisualDisentangleLoss(nn.Module):
    """The weighted sum of the module docstring; :meth:`forward` returns every term and ``"loss"``.

    Shapes: ``output`` of :class:`bundle.networks.vgmedgen_visual.VisualDisentangler` for images ``(B, 1, S, S)``;
    ``labels`` ``(B, 1, S, S)`` class indices (0 background, 1 vertebra, 2 lesion).
    """

    def __init__(self, rec: float = 1.0, kl: float = 0.01, dice: float = 10.0, reg: float = 1.0) -> None:
        super().__init__()
        self.weights = {"rec": rec, "kl": kl, "dice": dice, "reg": reg}
        self.dice_loss = DiceLoss(softmax=True, to_onehot_y=True)

    def forward(
        self, output: Mapping[str, torch.Tensor], image: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        terms = {
            "rec": (output["reconstruction"] - image).abs().mean(),
            "kl": kl_to_standard_normal(output["mu"], output["logvar"]),
            "dice": self.dice_loss(output["segmentation"], labels.long()),
            "reg": (output["z_of_reconstruction"] - output["z"].detach()).abs().mean(),
        }
        terms["loss"] = sum(self.weights[name] * value for name, value in terms.items())
        return terms
