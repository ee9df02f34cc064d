"""VG-MedGen's visual disentanglement: deterministic one-hot anatomy in eval, a straight-through gradient in
training, a SPADENet style VAE that does not share its channel list, and a short training on tiny crops that
lowers the reconstruction error and raises the segmentation head's Dice."""

from __future__ import annotations

import torch

from bundle.losses.vgmedgen_visual import kl_to_standard_normal
from bundle.networks.vgmedgen_visual import StyleVAE, VisualDisentangler
from tests.helpers.visual_training import held_out, small_visual_model, train

SIZE = 32
SMALL = {"unet_features": (8, 8, 16, 16, 32, 8), "style_channels": (8, 16, 32), "spade_channels": 16}


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


def test_anatomy_is_one_hot_and_deterministic_in_eval():
    torch.manual_seed(0)
    model = VisualDisentangler(image_size=SIZE, **SMALL).eval()
    images, _ = toy_crops(2, seed=0)
    first, second = model.anatomy(images), model.anatomy(images)
    assert torch.equal(first, second)
    assert torch.equal(first.sum(dim=1), torch.ones(2, SIZE, SIZE)) and set(first.unique().tolist()) <= {0.0, 1.0}
    a1, s1 = model.features(images)
    a2, s2 = model.features(images)
    assert torch.equal(a1, a2) and torch.equal(s1, s2)
    assert a1.shape == (2, 8) and torch.allclose(a1.sum(dim=1), torch.ones(2)) and s1.shape == (2, 8)
    # in training the anatomy is sampled (Gumbel), and its straight-through gradient reaches the UNet
    model.train()
    samples = [model.anatomy(images) for _ in range(3)]
    assert any(not torch.equal(samples[0], s) for s in samples[1:])
    (samples[0] * torch.randn_like(samples[0])).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.anatomy.unet.parameters() if p.ndim > 1)


def test_style_vaes_built_from_one_channel_list_have_the_same_layout():
    channels = [8, 16, 32]
    first, second = StyleVAE(4, SIZE, channels, 4, 8), StyleVAE(4, SIZE, channels, 4, 8)
    assert channels == [8, 16, 32]
    assert {k: v.shape for k, v in first.state_dict().items()} == {k: v.shape for k, v in second.state_dict().items()}


def test_the_kl_term_is_zero_for_the_prior_and_the_style_is_its_mean_in_eval():
    assert kl_to_standard_normal(torch.zeros(3, 8), torch.zeros(3, 8)).item() == 0.0
    assert kl_to_standard_normal(torch.ones(3, 8), torch.zeros(3, 8)).item() == 4.0
    torch.manual_seed(0)
    model = VisualDisentangler(image_size=SIZE, **SMALL).eval()
    output = model(toy_crops(2, seed=1)[0])
    assert torch.equal(output["z"], output["mu"])


def test_a_short_training_lowers_the_reconstruction_error_and_raises_the_dice():
    model = small_visual_model(SIZE)
    test_images, test_labels = toy_crops(8, seed=3)
    rec_before, dice_before = held_out(model, test_images, test_labels)
    train(model, *toy_crops(16, seed=2), steps=80)
    rec_after, dice_after = held_out(model, test_images, test_labels)
    assert rec_after < 0.5 * rec_before, (rec_before, rec_after)
    assert min(dice_after) > 0.6 and sum(dice_after) > sum(dice_before) + 0.6, (dice_before, dice_after)
