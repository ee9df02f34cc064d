"""A short stage-V (VG-MedGen visual disentanglement) training on crops and its held-out figures, and toy crops,
shared by the toy-crop, the phantom-crop and the stage trainers' learning tests."""

from __future__ import annotations

import torch

from bundle.losses.vgmedgen_visual import VisualDisentangleLoss
from bundle.networks.vgmedgen_visual import VisualDisentangler

SIZE = 32


def toy_crops(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops ``(N, 1, 32, 32)`` of a bright box "vertebra" holding a brighter or darker disc "lesion" in noise,
    and their labels (0 background, 1 vertebra, 2 lesion)."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.1 + 0.02 * torch.randn(count, 1, SIZE, SIZE, generator=generator)
    labels = torch.zeros(count, 1, SIZE, SIZE)
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    for k in range(count):
        top, left = torch.randint(2, 10, (2,), generator=generator).tolist()
        height, width = torch.randint(16, 21, (2,), generator=generator).tolist()
        labels[k, 0, top : top + height, left : left + width] = 1
        cy, cx = top + height // 2, left + width // 2
        radius = float(torch.randint(3, 6, (1,), generator=generator))
        labels[k, 0][((rows - cy) ** 2 + (cols - cx) ** 2) <= radius**2] = 2
        lesion = 0.9 if torch.rand(1, generator=generator) < 0.5 else 0.3
        images[k, 0] += torch.where(labels[k, 0] == 1, 0.5, torch.where(labels[k, 0] == 2, lesion, 0.0))
    return images, labels


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
