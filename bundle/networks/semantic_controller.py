"""The Medical Semantic Controller (MSC): predicts the lesion's image feature from its text and the masked image.

``e_MSC = MSC([e_t ; e_v])`` (the paper's Eq. 3) is a transformer encoder over the two frozen CLIP features and
one learned query; the query's output, projected back to the CLIP width, is e_MSC: one vector, as in the paper.
Stage 1 aligns exactly that vector with the original image's feature e_r (Eq. 4), and the guided UNet attends to
exactly that vector (one token, ``K' = e_MSC W'_k``, ``V' = e_MSC W'_v``, Eq. 5), so everything the UNet sees of the
MSC is supervised. (Earlier versions made 4 tokens and aligned only their mean; their files are refused.)
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file
from torch import nn

from bundle.errors import InputError, check_state_dict
from bundle.networks.weight_files import read_safetensors, safetensors_metadata


class MedicalSemanticController(nn.Module):
    """Transformer encoder ``[e_t ; e_v] -> e_MSC``.

    Args:
        embed_dim: E, the width of the CLIP features in and of e_MSC out.
        width: the transformer's internal width.
        layers, heads: transformer depth and attention heads.
    """

    def __init__(self, embed_dim: int, width: int = 128, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        self.settings = {"embed_dim": embed_dim, "width": width, "layers": layers, "heads": heads}
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

    def save(self, path: str | os.PathLike) -> None:
        """Weights and settings in one safetensors file."""
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, str(path), metadata={"semantic_controller": json.dumps(self.settings)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> MedicalSemanticController:
        """Rebuild a controller saved by :meth:`save`."""
        if not os.path.isfile(path):
            raise InputError(path, "semantic controller weights are missing; run stage 1 (configs/train_msc.json)")
        metadata = safetensors_metadata(path)
        if "semantic_controller" not in metadata:
            raise InputError(path, "not a semantic controller file (no 'semantic_controller' settings)")
        settings = json.loads(metadata["semantic_controller"])
        tokens = settings.pop("num_tokens", 1) if isinstance(settings, dict) else 1
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
            raise InputError(path, f"unusable 'semantic_controller' settings ({error})") from error
        tensors = read_safetensors(path)
        check_state_dict(path, tensors, controller.state_dict(), "semantic controller")
        controller.load_state_dict(tensors)
        return controller
