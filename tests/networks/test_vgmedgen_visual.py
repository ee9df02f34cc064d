"""VG-MedGen's visual disentanglement: deterministic one-hot anatomy in eval, a straight-through gradient in
training, a SPADENet style VAE that does not share its channel list, and a short training on tiny crops that
lowers the reconstruction error and raises the segmentation head's Dice."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from bundle.errors import InputError
from bundle.losses.vgmedgen_visual import kl_to_standard_normal
from bundle.networks.vgmedgen_visual import VISUAL_FILE, StyleVAE, VisualDisentangler
from tests.helpers.visual_training import SIZE, held_out, small_visual_model, toy_crops, train

SMALL = {"unet_features": (8, 8, 16, 16, 32, 8), "style_channels": (8, 16, 32), "spade_channels": 16}


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


def test_save_and_load_round_trip_and_bad_files(tmp_path):
    torch.manual_seed(0)
    model = VisualDisentangler(image_size=SIZE, **SMALL)
    model.save(tmp_path / VISUAL_FILE)
    loaded = VisualDisentangler.load(tmp_path / VISUAL_FILE)
    state = loaded.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in model.state_dict().items())
    images, _ = toy_crops(2, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.features(images), loaded.features(images), strict=True))
    with pytest.raises(InputError, match=rf"{VISUAL_FILE}: file not found; run stage V"):
        VisualDisentangler.load(tmp_path / "elsewhere" / VISUAL_FILE)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="other.safetensors: not a vgmedgen_visual_disentangler file"):
        VisualDisentangler.load(tmp_path / "other.safetensors")
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(InputError, match="pickle.safetensors: not a safetensors file"):
        VisualDisentangler.load(tmp_path / "pickle.safetensors")
