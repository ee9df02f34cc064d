"""A short stage-V (VG-MedGen visual disentanglement) training on crops and its held-out figures, shared by the
toy-crop and the phantom-crop learning tests."""

from __future__ import annotations

import torch

from bundle.losses.vgmedgen_visual import VisualDisentangleLoss
from bundle.networks.vgmedgen_visual import VisualDisentangler


def small_visual_model(size: int = 32) -> VisualDisentangler:
    torch.manual_seed(0)
    return VisualDisentangler(
        image_size=size, unet_features=(8, 8, 16, 16, 32, 8), style_channels=(8, 16, 32), spade_channels=16
    )


def held_out(model: VisualDisentangler, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[float]]:
    """(reconstruction L1, [Dice of class 1, Dice of class 2]) in eval mode."""
    model.eval()
    with torch.no_grad():
        output = model(images)
    model.train()
    found = output["segmentation"].argmax(dim=1, keepdim=True)
    dice = []
    for c in (1, 2):
        a, b = found == c, labels == c
        dice.append((2 * (a & b).sum() / (a.sum() + b.sum()).clamp(min=1)).item())
    return (output["reconstruction"] - images).abs().mean().item(), dice


def train(model: VisualDisentangler, images: torch.Tensor, labels: torch.Tensor, steps: int, batch: int = 8) -> None:
    """``steps`` Adam steps (lr 3e-3) of :class:`VisualDisentangleLoss` on seeded random batches."""
    loss = VisualDisentangleLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(images), (batch,), generator=generator)
        terms = loss(model(images[index]), images[index], labels[index])
        optimiser.zero_grad()
        terms["loss"].backward()
        optimiser.step()
