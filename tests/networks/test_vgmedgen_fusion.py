"""VG-MedGen's hybrid feature fusion: each token carries its own vector, the type embeddings tell equal vectors apart,
the naive-concatenation ablation mixes both into one token."""

from __future__ import annotations

import pytest
import torch

from bundle.networks.vgmedgen_fusion import ANATOMY, STYLE, TEXT, HybridFeatureFusion


def vectors(seed: int, batch: int = 3, size: int = 8) -> torch.Tensor:
    return torch.randn(batch, size, generator=torch.Generator().manual_seed(seed))


def test_hffm_tokens_follow_their_own_vector_and_the_text_tokens_come_after():
    torch.manual_seed(0)
    fusion = HybridFeatureFusion(8, 8, width=16, hidden=32, text_dim=12)
    text = torch.randn(3, 5, 12)
    tokens = fusion(vectors(1), vectors(2), text)
    assert tokens.shape == (3, 2 + 5, 16)
    other_anatomy = fusion(vectors(3), vectors(2), text)
    other_style = fusion(vectors(1), vectors(4), text)
    assert not torch.allclose(other_anatomy[:, 0], tokens[:, 0]) and torch.equal(other_anatomy[:, 1:], tokens[:, 1:])
    assert not torch.allclose(other_style[:, 1], tokens[:, 1]) and torch.equal(
        other_style[:, [0, 2]], tokens[:, [0, 2]]
    )
    assert not torch.allclose(fusion(vectors(1), vectors(2), text + 1)[:, 2:], tokens[:, 2:])


def test_type_embeddings_tell_equal_anatomy_and_style_apart():
    torch.manual_seed(0)
    fusion = HybridFeatureFusion(8, 8, width=16, hidden=32, text_dim=12)
    fusion.style.load_state_dict(fusion.anatomy.state_dict())  # same branch: only the type embedding differs
    same = vectors(5)
    tokens = fusion(same, same, torch.zeros(3, 1, 12))
    types = fusion.type_embeddings
    assert not torch.allclose(tokens[:, 0], tokens[:, 1])
    torch.testing.assert_close(tokens[:, 0] - tokens[:, 1], (types[ANATOMY] - types[STYLE]).expand(3, -1))
    with torch.no_grad():
        types.zero_()
    tokens = fusion(same, same, torch.zeros(3, 1, 12))
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1])


def test_gradients_reach_both_branches_the_text_projection_and_the_type_table():
    fusion = HybridFeatureFusion(8, 8, width=16, hidden=32, text_dim=12)
    fusion(vectors(1), vectors(2), torch.randn(3, 4, 12)).square().sum().backward()
    for name in ("anatomy.1.weight", "style.1.weight", "text.weight", "type_embeddings"):
        assert dict(fusion.named_parameters())[name].grad.abs().sum() > 0, name
    assert fusion.type_embeddings.grad[TEXT].abs().sum() > 0


def test_naive_concatenation_is_one_token_of_both_vectors_without_type_embeddings():
    fusion = HybridFeatureFusion(8, 8, width=16, hidden=32, mode="concat")
    assert not hasattr(fusion, "type_embeddings")
    tokens = fusion(vectors(1), vectors(2))
    assert tokens.shape == (3, 1, 16)
    assert not torch.allclose(fusion(vectors(3), vectors(2)), tokens)
    assert not torch.allclose(fusion(vectors(1), vectors(4)), tokens)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="mode"):
        HybridFeatureFusion(8, 8, 16, mode="sum")
    fusion = HybridFeatureFusion(8, 8, 16)
    with pytest.raises(ValueError, match="anatomy"):
        fusion(vectors(1, size=7), vectors(2))
    with pytest.raises(ValueError, match="text_states"):
        fusion(vectors(1), vectors(2), torch.zeros(3, 1, 4))
