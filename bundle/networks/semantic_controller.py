"""The Medical Semantic Controller (MSC): predicts the lesion's image feature from its text and the masked image.

``e_MSC = MSC([e_t ; e_v])`` (the paper's Eq. 3) is a transformer encoder over the two frozen CLIP features and
one learned query; the query's output, projected back to the CLIP width, is e_MSC: one vector, as in the paper.
Stage 1 aligns exactly that vector with the original image's feature e_r (Eq. 4), and the guided UNet attends to
exactly that vector (one token, ``K' = e_MSC W'_k``, ``V' = e_MSC W'_v``, Eq. 5), so everything the UNet sees of the
MSC is supervised. (Earlier versions made 4 tokens and aligned only their mean; their files are refused.)

The controller is a diffusers ``ModelMixin``/``ConfigMixin``: its settings are its registered config. The bundle
saves it as one safetensors file (``msc.safetensors``: the tensors, the config in the metadata, the format of
earlier versions); diffusers' ``save_pretrained`` folder (``config.json`` + safetensors) loads too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from safetensors.torch import save_file
from torch import nn

from bundle.errors import InputError, check_state_dict
from bundle.networks.weight_files import read_safetensors, safetensors_metadata

METADATA_KEY = "semantic_controller"
PRETRAINED_WEIGHTS = "diffusion_pytorch_model.safetensors"  # in a save_pretrained folder


class MedicalSemanticController(ModelMixin, ConfigMixin):
    """Transformer encoder ``[e_t ; e_v] -> e_MSC``.

    Args:
        embed_dim: E, the width of the CLIP features in and of e_MSC out.
        width: the transformer's internal width.
        layers, heads: transformer depth and attention heads.
    """

    @register_to_config
    def __init__(self, embed_dim: int, width: int = 128, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_projection = nn.Linear(embed_dim, width)
        self.input_type = nn.Parameter(torch.zeros(2, width))  # tells e_t from e_v
        self.query = nn.Parameter(torch.randn(1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.output_norm = nn.LayerNorm(width)
        self.output_projection = nn.Linear(width, embed_dim)

    def forward(self, text_feature: torch.Tensor, masked_image_feature: torch.Tensor) -> torch.Tensor:
        """``(e_t (B, E), e_v (B, E)) -> e_MSC (B, E)``."""
        if text_feature.shape != masked_image_feature.shape or text_feature.shape[-1] != self.embed_dim:
            raise ValueError(
                f"e_t and e_v must both be (B, {self.embed_dim}), got {tuple(text_feature.shape)} "
                f"and {tuple(masked_image_feature.shape)}"
            )
        inputs = self.input_projection(torch.stack([text_feature, masked_image_feature], dim=1)) + self.input_type
        query = self.query.expand(inputs.shape[0], -1, -1)
        encoded = self.encoder(torch.cat([inputs, query], dim=1))[:, 2]
        return self.output_projection(self.output_norm(encoded))

    @property
    def settings(self) -> dict[str, int]:
        """The registered config without diffusers' own entries: what the saved file stores."""
        return {name: value for name, value in self.config.items() if not name.startswith("_")}

    def save(self, path: str | os.PathLike) -> None:
        """Weights and settings in one safetensors file."""
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, str(path), metadata={METADATA_KEY: json.dumps(self.settings)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> MedicalSemanticController:
        """Rebuild a controller saved by :meth:`save` (a file) or by ``save_pretrained`` (a folder); weights are read
        as safetensors only, and their names and shapes are checked against the settings."""
        path = Path(path)
        if path.is_dir():
            weights = path / PRETRAINED_WEIGHTS
            if not (path / cls.config_name).is_file() or not weights.is_file():
                raise InputError(path, f"not a saved semantic controller ({cls.config_name} + {PRETRAINED_WEIGHTS})")
            settings = cls.load_config(path)
        elif path.is_file():
            weights = path
            metadata = safetensors_metadata(path)
            if METADATA_KEY not in metadata:
                raise InputError(path, f"not a semantic controller file (no {METADATA_KEY!r} settings)")
            settings = json.loads(metadata[METADATA_KEY])
        else:
            raise InputError(path, "semantic controller weights are missing; run stage 1 (configs/train_msc.json)")
        if not isinstance(settings, dict):
            raise InputError(path, f"unusable {METADATA_KEY!r} settings ({settings!r})")
        settings = {name: value for name, value in settings.items() if not name.startswith("_")}
        tokens = settings.pop("num_tokens", 1)
        if tokens != 1:
            raise InputError(
                path,
                f"an MSC of an earlier version: it makes {tokens} e_MSC tokens of which stage 1 "
                "aligned only their mean with e_r, while the UNet attended to each; this version "
                "makes one e_MSC vector (the paper's), aligned and attended as it is. Run stage 1 "
                "(configs/train_msc.json) again, then stage 2",
            )
        try:
            controller = cls(**settings)
        except (TypeError, ValueError, AssertionError) as error:
            raise InputError(path, f"unusable {METADATA_KEY!r} settings ({error})") from error
        tensors = read_safetensors(weights)
        check_state_dict(weights, tensors, controller.state_dict(), "semantic controller")
        controller.load_state_dict(tensors)
        return controller
