"""VG-MedGen's text disentanglement: shapes, a loss of zero at its optimum, no dropout in eval, and a short
training that aligns held-out texts' anatomy and style vectors with their own targets, not with each other's."""

from __future__ import annotations

import pytest
import torch

from bundle.errors import InputError
from bundle.losses.vgmedgen_text import TextAlignmentLoss
from bundle.networks.vgmedgen_text import TEXT_FILE, TextDisentangler, load_text_disentangler


def test_shapes_and_eval_is_deterministic():
    torch.manual_seed(0)
    model = TextDisentangler(input_dim=32, anatomy_dim=8, style_dim=4, hidden=16)
    embedding = torch.randn(5, 32)
    t_a, t_s, reconstructed = model.eval()(embedding)
    assert t_a.shape == (5, 8) and t_s.shape == (5, 4) and reconstructed.shape == (5, 32)
    assert all(torch.equal(x, y) for x, y in zip(model(embedding), (t_a, t_s, reconstructed), strict=True))
    model.train()
    assert not torch.equal(model(embedding)[0], t_a)  # dropout acts in training only


def test_the_loss_is_zero_at_its_optimum_and_leaves_the_targets_alone():
    loss = TextAlignmentLoss()
    a, s, e = torch.randn(3, 8), torch.randn(3, 4), torch.randn(3, 32)
    terms = loss(2 * a, 0.5 * s, e, a, s, e)  # cosine ignores the scale
    assert terms["loss"].item() == pytest.approx(0.0, abs=1e-6)
    target = a.clone().requires_grad_()
    t_a = torch.randn(3, 8, requires_grad=True)
    loss(t_a, s, e, target, s, e)["loss"].backward()
    assert target.grad is None and t_a.grad.abs().sum() > 0
    assert loss(-a, s, e, a, s, e)["anatomy"].item() == pytest.approx(2.0)


def test_a_short_training_aligns_held_out_texts_with_their_own_targets():
    # embeddings mix an anatomy code and a style code; the targets are fixed linear functions of each code
    generator = torch.Generator().manual_seed(0)
    mix = torch.randn(16, 32, generator=generator)
    to_anatomy, to_style = torch.randn(8, 8, generator=generator), torch.randn(8, 8, generator=generator)

    def batch(count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        codes = torch.randn(count, 16, generator=generator)
        return codes @ mix, codes[:, :8] @ to_anatomy, codes[:, 8:] @ to_style

    torch.manual_seed(0)
    model, loss = TextDisentangler(32, hidden=64), TextAlignmentLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    train, test = batch(256), batch(64)
    for step in range(300):
        index = torch.arange(32) + 32 * (step % 8)
        e, a, s = (x[index] for x in train)
        terms = loss(*model(e), a, s, e)
        optimiser.zero_grad()
        terms["loss"].backward()
        optimiser.step()
    e, a, s = test
    with torch.no_grad():
        t_a, t_s, _ = model.eval()(e)
    cosine = torch.nn.functional.cosine_similarity
    assert cosine(t_a, a).mean() > 0.8 and cosine(t_s, s).mean() > 0.8
    assert cosine(t_a, s).mean().abs() < 0.3  # the anatomy vector is not the style target


def test_save_and_load_round_trip_and_a_check_of_the_embedding_width(tmp_path):
    torch.manual_seed(0)
    model = TextDisentangler(32, anatomy_dim=8, style_dim=4, hidden=16)
    model.save(tmp_path / TEXT_FILE)
    loaded = load_text_disentangler(tmp_path, input_dim=32)
    assert loaded.settings == model.settings
    embedding = torch.randn(3, 32)
    assert all(torch.equal(a, b) for a, b in zip(model.eval()(embedding), loaded.eval()(embedding), strict=True))
    with pytest.raises(InputError, match="for 32-wide text embeddings; this text encoder makes 64"):
        load_text_disentangler(tmp_path, input_dim=64)
    with pytest.raises(InputError, match=rf"{TEXT_FILE}: file not found; run stage T"):
        load_text_disentangler(tmp_path / "empty")
    wide = TextDisentangler(32, hidden=16)
    wide.decoder = TextDisentangler(32, hidden=8).decoder  # tensors that do not fit the stored settings
    wide.save(tmp_path / "odd.safetensors")
    with pytest.raises(InputError, match="odd.safetensors: weights of another architecture"):
        TextDisentangler.load(tmp_path / "odd.safetensors")
