"""A frozen clinical BERT (Bio_ClinicalBERT in VG-MedGen's full profile) as a text encoder for the text disentangler
and the fusion: the same two features as :class:`bundle.networks.medical_clip.MedicalClipEncoder`'s text side.

* ``encode_text(texts)`` -> ``(B, E)``: the mean of the last hidden states over the text's tokens (padding left
  out; the methods note's "ClinicalBERT (mean-pooled)"), L2-normalised like the CLIP features;
* ``text_states(texts)`` -> ``(B, L, D)``: the last hidden states, every text padded to ``max_length`` tokens.

Weights come from a local folder (:data:`bundle.weights.layouts.CLINICAL_BERT_PART`); nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bundle.errors import InputError
from bundle.networks.text_truncation import warn_truncated_text
from bundle.weights.layouts import CLINICAL_BERT_HOW, CLINICAL_BERT_PART, TEXT_MODEL_VOCABS


class ClinicalTextEncoder(nn.Module):
    """Frozen ``transformers.BertModel`` with its tokenizer (always in eval mode, no gradient).

    Args:
        model: a ``BertModel``.
        tokenizer: its tokenizer (``texts -> input_ids, attention_mask``).
        max_length: tokens per text (``L``); longer texts are cut, with a warning. At most the model's
            ``max_position_embeddings``.
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 128) -> None:
        super().__init__()
        positions = int(model.config.max_position_embeddings)
        if not 2 < max_length <= positions:
            raise ValueError(f"max_length must be in 3..{positions} (the model's positions), got {max_length}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, max_length: int = 128) -> ClinicalTextEncoder:
        """The BERT of a local folder (config.json, model.safetensors, vocab.txt or tokenizer.json); a missing file is
        an :class:`InputError` naming it and how to get it."""
        from transformers import AutoTokenizer, BertModel

        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(folder, f"folder not found; {CLINICAL_BERT_HOW}")
        for name in CLINICAL_BERT_PART.files:
            if not (folder / name).is_file():
                raise InputError(folder / name, f"missing; {CLINICAL_BERT_HOW}")
        if not any((folder / name).is_file() for name in TEXT_MODEL_VOCABS):
            raise InputError(folder / TEXT_MODEL_VOCABS[0], f"missing (the tokenizer vocabulary); {CLINICAL_BERT_HOW}")
        model = BertModel.from_pretrained(folder, local_files_only=True, use_safetensors=True, add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model, tokenizer, max_length)

    @property
    def embed_dim(self) -> int:
        """E, the width of :meth:`encode_text` (the BERT's hidden size)."""
        return int(self.model.config.hidden_size)

    @property
    def text_state_dim(self) -> int:
        """D, the width of each :meth:`text_states` token."""
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> ClinicalTextEncoder:
        return super().train(False)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``(B, E)`` float32, unit L2 norm: the mean of the token states over each text's own tokens."""
        states, mask = self._forward(texts)
        mask = mask[..., None].to(states.dtype)
        return F.normalize((states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1), dim=-1)

    @torch.no_grad()
    def text_states(self, texts: Sequence[str]) -> torch.Tensor:
        """``(B, max_length, D)`` float32 last hidden states, padding tokens included (the empty text's are the null
        prompt's)."""
        return self._forward(texts)[0]

    def _forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts) or not texts:
            raise TypeError("texts must be a non-empty sequence of str")
        tokens = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        for text, full in zip(texts, tokens["attention_mask"][:, -1].bool().tolist(), strict=True):
            if full:  # no padding left: the text may be cut
                warn_truncated_text(text, self.max_length, "clinical text encoder")
        device = next(self.model.parameters()).device
        mask = tokens["attention_mask"].to(device)
        states = self.model(input_ids=tokens["input_ids"].to(device), attention_mask=mask).last_hidden_state
        return states.float(), mask
