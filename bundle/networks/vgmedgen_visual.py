"""VG-MedGen's visual disentanglement (stage V): an image's *anatomy* (a few one-hot spatial maps, constrained by a
segmentation head) and its *style* (a VAE latent), and a decoder that renders the image back from the two.

- :class:`AnatomyEncoder`: MONAI ``BasicUNet`` -> ``A`` anatomy logits -> one-hot maps; in training a
  straight-through Gumbel-softmax (hard sample forward, soft gradient backward), in eval the **argmax** (the
  authors' release sampled Gumbel noise in eval too, so its anatomy targets changed from one extraction to the
  next).
- :class:`SegmentationHead`: two MONAI ``Convolution`` blocks and a 1x1 convolution from the anatomy maps to
  segmentation logits (background, vertebra, lesion), trained with Dice
  (:class:`bundle.losses.vgmedgen_visual.VisualDisentangleLoss`).
- :class:`StyleVAE`: MONAI ``SPADENet``: its encoder (on the image and the anatomy maps) is the style VAE
  (``mu``, ``log sigma^2``, ``z_dim``), its SPADE decoder renders the anatomy maps in the style ``z``.
- :class:`VisualDisentangler`: the three together; :meth:`VisualDisentangler.features` gives the frozen visual
  targets of the text stage (anatomy area fractions and the style mean).

Shapes: images ``(B, 1, S, S)`` in [0, 1] (the working window of
:func:`bundle.transforms.case_to_slices.slice_transform`), ``S`` divisible by ``2 ** len(style_channels)`` and by
16 (the UNet's four poolings).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import BasicUNet, SPADENet
from torch import nn

from bundle.networks.weight_files import load_with_settings, save_with_settings

VISUAL_FILE = "vgmedgen_visual.safetensors"
SETTINGS_KEY = "vgmedgen_visual_disentangler"


class AnatomyEncoder(nn.Module):
    """Image ``(B, 1, S, S)`` -> anatomy maps ``(B, A, S, S)``, exactly one-hot per pixel.

    Args:
        anatomy_channels: ``A``, the number of anatomy maps.
        features: ``BasicUNet`` feature widths (six numbers).
        temperature: the Gumbel-softmax temperature in training.
    """

    def __init__(
        self,
        anatomy_channels: int = 8,
        features: Sequence[int] = (16, 16, 32, 64, 128, 16),
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.unet = BasicUNet(spatial_dims=2, in_channels=1, out_channels=anatomy_channels, features=tuple(features))
        self.temperature = temperature

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.unet(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.logits(image)
        if self.training:
            return F.gumbel_softmax(logits, tau=self.temperature, hard=True, dim=1)
        return F.one_hot(logits.argmax(dim=1), logits.shape[1]).movedim(-1, 1).to(logits.dtype)


class SegmentationHead(nn.Module):
    """Anatomy maps ``(B, A, S, S)`` -> segmentation logits ``(B, num_classes, S, S)``."""

    def __init__(self, anatomy_channels: int = 8, num_classes: int = 3, hidden: int = 16) -> None:
        super().__init__()
        block = {"spatial_dims": 2, "kernel_size": 3, "norm": "batch", "act": "relu"}
        self.layers = nn.Sequential(
            Convolution(in_channels=anatomy_channels, out_channels=hidden, **block),
            Convolution(in_channels=hidden, out_channels=hidden, **block),
            nn.Conv2d(hidden, num_classes, kernel_size=1),
        )

    def forward(self, anatomy: torch.Tensor) -> torch.Tensor:
        return self.layers(anatomy)


class StyleVAE(nn.Module):
    """MONAI ``SPADENet`` as style encoder + anatomy-conditioned decoder.

    Args:
        anatomy_channels: ``A`` (the SPADE label channels).
        image_size: ``S``.
        channels: encoder widths (the decoder uses them reversed); copied, since ``SPADENet`` reverses the list it
            is given in place (two networks built from one list would otherwise get opposite orders).
        z_dim: the style dimension.
        spade_channels: the hidden width of the SPADE normalisation blocks.
    """

    def __init__(
        self,
        anatomy_channels: int = 8,
        image_size: int = 48,
        channels: Sequence[int] = (16, 32, 64),
        z_dim: int = 8,
        spade_channels: int = 32,
    ) -> None:
        super().__init__()
        self.net = SPADENet(
            spatial_dims=2,
            in_channels=1 + anatomy_channels,
            out_channels=1,
            label_nc=anatomy_channels,
            input_shape=(image_size, image_size),
            channels=list(channels),
            z_dim=z_dim,
            is_vae=True,
            spade_intermediate_channels=spade_channels,
            last_act=None,
        )

    def encode(self, image: torch.Tensor, anatomy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(B, z_dim)``."""
        return self.net.encoder(torch.cat([image, anatomy], dim=1))

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """The reparameterised ``z`` in training, ``mu`` in eval (a deterministic style)."""
        return self.net.encoder.reparameterize(mu, logvar) if self.training else mu

    def decode(self, anatomy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The image ``(B, 1, S, S)`` rendered from anatomy maps and a style ``z``."""
        return self.net.decode(anatomy, z)


class VisualDisentangler(nn.Module):
    """Anatomy encoder, segmentation head and style VAE (the defaults are the ``tiny`` profile's sizes)."""

    def __init__(
        self,
        image_size: int = 48,
        anatomy_channels: int = 8,
        num_classes: int = 3,
        z_dim: int = 8,
        unet_features: Sequence[int] = (16, 16, 32, 64, 128, 16),
        style_channels: Sequence[int] = (16, 32, 64),
        spade_channels: int = 32,
    ) -> None:
        super().__init__()
        self.settings = {
            "image_size": image_size,
            "anatomy_channels": anatomy_channels,
            "num_classes": num_classes,
            "z_dim": z_dim,
            "unet_features": list(unet_features),
            "style_channels": list(style_channels),
            "spade_channels": spade_channels,
        }
        self.anatomy = AnatomyEncoder(anatomy_channels, unet_features)
        self.segmentation = SegmentationHead(anatomy_channels, num_classes)
        self.style = StyleVAE(anatomy_channels, image_size, style_channels, z_dim, spade_channels)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``anatomy`` ``(B, A, S, S)``, ``segmentation`` logits ``(B, K, S, S)``, ``reconstruction``
        ``(B, 1, S, S)``, ``mu``, ``logvar``, ``z`` ``(B, z_dim)`` and ``z_of_reconstruction`` (the style mean
        re-encoded from the reconstruction, for the latent regression term)."""
        anatomy = self.anatomy(image)
        mu, logvar = self.style.encode(image, anatomy)
        z = self.style.sample(mu, logvar)
        reconstruction = self.style.decode(anatomy, z)
        z_again, _ = self.style.encode(reconstruction, anatomy)
        return {
            "anatomy": anatomy,
            "segmentation": self.segmentation(anatomy),
            "reconstruction": reconstruction,
            "mu": mu,
            "logvar": logvar,
            "z": z,
            "z_of_reconstruction": z_again,
        }

    @torch.no_grad()
    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The visual targets of the text stage, in eval mode: anatomy area fractions ``(B, A)`` (each map's
        share of the pixels, as the authors' release pooled it) and the style mean ``(B, z_dim)``."""
        was_training = self.training
        self.eval()
        try:
            anatomy = self.anatomy(image)
            mu, _ = self.style.encode(image, anatomy)
        finally:
            self.train(was_training)
        return anatomy.mean(dim=(2, 3)), mu

    def save(self, path: str | os.PathLike) -> None:
        """Weights and settings in one safetensors file."""
        save_with_settings(self, path, SETTINGS_KEY, self.settings)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VisualDisentangler:
        """Rebuild a disentangler saved by :meth:`save` (names and shapes checked; a missing file is named)."""
        return load_with_settings(
            cls, path, SETTINGS_KEY, "run stage V (configs/vgmedgen_train_visual.json) to write it"
        )
