"""The clinical text encoder (Bio_ClinicalBERT in VG-MedGen's full profile) on a tiny random BERT in its layout:
mean pooling over the text's own tokens, fixed-length token states, frozen, and a missing file named."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from bundle.errors import InputError
from bundle.networks.clinical_text import ClinicalTextEncoder
from tests.helpers.tiny_weights import CLINICAL_BERT_LENGTH, TINY_BERT_WIDTH

TEXTS = ["a lesion in the l3 vertebral body.", "hypointense metastasis, 12 mm"]


@pytest.fixture(scope="module")
def bert_dir(vgmedgen_pretrained):
    return vgmedgen_pretrained / "Bio_ClinicalBERT"


def test_the_pooled_embedding_is_the_mean_over_the_texts_own_tokens(bert_dir):
    short, long = ClinicalTextEncoder.from_folder(bert_dir, 16), ClinicalTextEncoder.from_folder(bert_dir, 32)
    pooled = short.encode_text(TEXTS)
    assert pooled.shape == (2, TINY_BERT_WIDTH) and short.embed_dim == TINY_BERT_WIDTH
    torch.testing.assert_close(pooled.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(long.encode_text(TEXTS), pooled, atol=1e-5, rtol=0)  # padding is left out
    states = short.text_states(TEXTS)
    tokens = short.tokenizer(TEXTS[:1])["input_ids"][0]
    mean = states[0, : len(tokens)].mean(dim=0)
    torch.testing.assert_close(pooled[0], mean / mean.norm(), atol=1e-5, rtol=0)
    assert not torch.allclose(pooled[0], pooled[1])


def test_token_states_have_a_fixed_length_and_the_encoder_stays_frozen(bert_dir):
    encoder = ClinicalTextEncoder.from_folder(bert_dir, 24)
    assert encoder.text_states(["", *TEXTS]).shape == (3, 24, TINY_BERT_WIDTH)
    assert encoder.text_state_dim == TINY_BERT_WIDTH
    encoder.train()
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ValueError, match=f"max_length must be in 3..{CLINICAL_BERT_LENGTH}"):
        ClinicalTextEncoder.from_folder(bert_dir, CLINICAL_BERT_LENGTH + 1)


def test_a_text_that_fills_every_token_is_warned_about(bert_dir, caplog):
    encoder = ClinicalTextEncoder.from_folder(bert_dir, 8)
    with caplog.at_level(logging.WARNING):
        encoder.encode_text(["a lesion in the l3 vertebral body with a hypo intense metastasis"])
    assert "fills all 8 tokens of the clinical text encoder" in caplog.text


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.txt"])
def test_a_missing_file_is_named_with_how_to_get_it(bert_dir, tmp_path, name):
    folder = shutil.copytree(bert_dir, tmp_path / "bert")
    (folder / name).unlink()
    with pytest.raises(InputError, match="emilyalsentzer/Bio_ClinicalBERT") as error:
        ClinicalTextEncoder.from_folder(folder)
    assert error.value.source == str(folder / name)
