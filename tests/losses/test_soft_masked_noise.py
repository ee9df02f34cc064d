"""The soft-mask-weighted noise loss of stage 2."""

from __future__ import annotations

import pytest
import torch

from bundle.losses.soft_masked_noise import SoftMaskedNoiseLoss


def test_masked_loss_ignores_everything_outside_the_mask():
    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(2, 1, 16, 16, generator=generator), torch.randn(2, 1, 16, 16, generator=generator)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:10, 5:12] = 1.0
    mask[:, :, 3, 5:12] = 0.3  # a soft edge
    loss = SoftMaskedNoiseLoss()
    reference = loss(prediction, target, mask)
    perturbed = target + 100.0 * torch.randn(2, 1, 16, 16, generator=generator) * (mask == 0)
    assert torch.equal(loss(prediction, perturbed, mask), reference)
    inside = target + (mask > 0) * 1.0
    assert not torch.allclose(loss(prediction, inside, mask), reference)
    unmasked = SoftMaskedNoiseLoss(mask_weighted=False)
    assert not torch.allclose(unmasked(prediction, perturbed, mask), unmasked(prediction, target, mask))


def test_masked_loss_is_normalised_by_mask_mass_and_refuses_an_empty_mask():
    prediction, target = torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    small, large = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    small[..., 2:4, 2:4] = 1.0
    loss = SoftMaskedNoiseLoss()
    assert float(loss(prediction, target, small)) == pytest.approx(1.0)
    assert float(loss(prediction, target, large)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        loss(prediction, target, torch.zeros(1, 1, 8, 8))
