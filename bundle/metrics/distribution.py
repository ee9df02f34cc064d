"""FID and KID between synthetic and real slices, on a feature extractor that loads offline.

Both compare *distributions* of image features, so they are ignite metrics that keep every feature of the
epoch and compute at its end. ``update`` takes ``(pred, label)``: the synthetic images and the real ones
(``(B, 1, H, W)`` in [0, 1]).

* FID (Heusel et al. 2017): ``|mu_r - mu_s|^2 + tr(S_r + S_s - 2 (S_r S_s)^(1/2))`` of the two feature sets'
  means and covariances, computed by MONAI's :func:`monai.metrics.fid.get_fid_score` (float64, scipy
  ``sqrtm``).
* KID (Binkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x . y / d + 1)^3``, averaged over random subsets (as torch-fidelity / torchmetrics do; MONAI's
  ``MMDMetric`` has only the linear kernel). The standard deviation over subsets is reported as ``<name>_std``.

Feature extractors (:func:`feature_extractor`) name themselves in ``description``, which every report
carries: FID is only comparable between runs with the *same* extractor, and only a TF-Inception pool3 FID is
comparable with published numbers. Options, all offline:

* a local torchvision InceptionV3 weight file (``architecture="inception_v3"``; 2048-d pool features) or a
  ResNet-50 one, e.g. RadImageNet (``architecture="resnet50"``), read with safetensors or
  ``torch.load(weights_only=True)``, never by unpickling code;
* otherwise the image tower of the bundle's own medical CLIP (``models/clip``: the tiny profile's is
  random-initialised and frozen, the sd15 profile's is BiomedCLIP); its L2-normalised features are used.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from ignite.metrics import Metric
from monai.metrics.fid import get_fid_score
from safetensors.torch import load_file

from bundle.errors import InputError
from bundle.networks.medical_clip import CONFIG_NAME, MedicalClipEncoder
from bundle.networks.weight_files import SAFETENSORS_READ_ERRORS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHITECTURES = {"inception_v3": 299, "resnet50": 224}
NOT_PUBLISHED_FID = "not comparable to published FID"


class FeatureExtractor(torch.nn.Module):
    """Images ``(B, 1, H, W)`` in [0, 1] -> features ``(B, D)`` (float32), frozen, with a ``description``."""

    description: str = "unnamed feature extractor"

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # frozen: batch norm and dropout always in eval mode

    def _device(self) -> torch.device:
        return next(self.parameters()).device


class ClipImageFeatures(FeatureExtractor):
    """The image tower of a :class:`MedicalClipEncoder` (unit-norm features)."""

    def __init__(self, encoder: MedicalClipEncoder, description: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.description = description

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode_image(images.to(self._device()).clamp(0, 1)).float()


class TorchvisionFeatures(FeatureExtractor):
    """Global-pool features of a torchvision InceptionV3 or ResNet-50 loaded from a local weight file.

    Grayscale is repeated to RGB, resized (bilinear, antialiased) to the network's input size (299 / 224) and
    normalised with the ImageNet mean and std. InceptionV3 is built as torchvision builds it for its ImageNet
    weights (``transform_input=True``, auxiliary head present so that their file loads strictly).
    """

    def __init__(self, architecture: str, weights: str | os.PathLike) -> None:
        super().__init__()
        import torchvision

        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
        self.architecture, self.size = architecture, ARCHITECTURES[architecture]
        if architecture == "inception_v3":
            network = torchvision.models.inception_v3(
                weights=None, aux_logits=True, transform_input=True, init_weights=False
            )
        else:
            network = torchvision.models.resnet50(weights=None)
        state = _read_state_dict(Path(weights))
        head = "fc."
        state = {k: v for k, v in state.items() if not k.startswith(head)}
        missing, unexpected = network.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith(head)]
        if missing or unexpected:
            raise InputError(
                weights,
                f"not a torchvision {architecture} state dict: {len(missing)} missing keys "
                f"({', '.join(missing[:3])}...), {len(unexpected)} unexpected keys "
                f"({', '.join(unexpected[:3])}...)",
            )
        network.fc = torch.nn.Identity()
        self.network = network.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        kind = "InceptionV3 pool" if architecture == "inception_v3" else "ResNet-50 (e.g. RadImageNet) pool"
        self.description = (
            f"torchvision {kind} features (2048-d) from {Path(weights).resolve()}; "
            f"{NOT_PUBLISHED_FID} unless these are the TF-Inception FID weights"
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self._device(), torch.float32).clamp(0, 1).expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return self.network((x - self.mean) / self.std).float()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file loaded with ``weights_only=True`` (tensors only)."""
    if not path.is_file():
        raise InputError(path, "feature-extractor weight file not found")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (*SAFETENSORS_READ_ERRORS, pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        # unreadable, truncated, or code a weights-only load refuses
        raise InputError(path, f"cannot read the weights as tensors only ({type(error).__name__}: {error})") from error
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "expected a mapping of parameter names to tensors")
    for prefix in ("module.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def describe_clip(encoder: MedicalClipEncoder, folder: str | os.PathLike | None = None) -> str:
    """The description of a medical-CLIP image tower, from its open_clip ``model_cfg`` (and the folder it was
    loaded from, when that folder holds an ``open_clip_config.json``)."""
    model_cfg = encoder.model_cfg or {}
    vision_cfg, text_cfg = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    timm_name, hf_name = vision_cfg.get("timm_model_name"), text_cfg.get("hf_model_name")
    if timm_name or hf_name:
        kind = f"pretrained medical CLIP, BiomedCLIP-style ({timm_name or hf_name})"
    elif model_cfg:
        kind = (
            f"tiny random-initialised medical CLIP (ViT width {vision_cfg.get('width')}, "
            f"{vision_cfg.get('layers')} layers; frozen, untrained features)"
        )
    else:
        kind = "medical CLIP of unknown configuration"
    where = ""
    if folder is not None and (Path(folder) / CONFIG_NAME).is_file():
        where = f" from {Path(folder).resolve()}"
    return f"image tower of the {kind}{where}, {encoder.embed_dim}-d unit-norm features; {NOT_PUBLISHED_FID}"


def feature_extractor(
    weights: str | os.PathLike | None = None,
    architecture: str = "inception_v3",
    clip_encoder: MedicalClipEncoder | None = None,
    clip_dir: str | os.PathLike | None = None,
) -> FeatureExtractor:
    """The extractor FID / KID use: a local torchvision ``architecture`` weight file when ``weights`` is given,
    else the medical CLIP image tower (``clip_encoder``, or loaded from ``clip_dir``)."""
    if weights:
        return TorchvisionFeatures(architecture, weights)
    if clip_encoder is None:
        if clip_dir is None:
            raise ValueError("give a weights file for the feature extractor, or a medical CLIP (clip_encoder/clip_dir)")
        clip_encoder = MedicalClipEncoder.from_local_dir(clip_dir)
    return ClipImageFeatures(clip_encoder, describe_clip(clip_encoder, clip_dir))


# ---------------------------------------------------------------------------------------------- measures
def _check_features(real: torch.Tensor, synthetic: torch.Tensor, minimum: int) -> None:
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise ValueError(
            f"need two (N, D) feature sets of the same D, got {tuple(real.shape)} and {tuple(synthetic.shape)}"
        )
    if min(len(real), len(synthetic)) < minimum:
        raise ValueError(
            f"need at least {minimum} images in each set, got {len(real)} real and {len(synthetic)} synthetic"
        )


def frechet_distance(real: torch.Tensor, synthetic: torch.Tensor) -> float:
    """FID of two feature sets ``(N, D)``, ``(M, D)`` (D >= 2; MONAI's :func:`get_fid_score`, float64)."""
    _check_features(real, synthetic, 2)
    if real.shape[1] < 2:
        raise ValueError("FID needs features of at least 2 dimensions")
    return float(get_fid_score(synthetic, real))


def polynomial_mmd(real: torch.Tensor, synthetic: torch.Tensor, degree: int = 3, coefficient: float = 1.0) -> float:
    """The unbiased MMD^2 of two feature sets with ``k(x, y) = (x . y / d + coefficient)^degree``."""
    _check_features(real, synthetic, 2)
    real, synthetic = real.double(), synthetic.double()
    dimension = real.shape[1]

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / dimension + coefficient) ** degree

    k_rr, k_ss, k_rs = kernel(real, real), kernel(synthetic, synthetic), kernel(real, synthetic)
    m, n = len(real), len(synthetic)
    within_real = (k_rr.sum() - k_rr.diagonal().sum()) / (m * (m - 1))
    within_synthetic = (k_ss.sum() - k_ss.diagonal().sum()) / (n * (n - 1))
    return float(within_real + within_synthetic - 2 * k_rs.mean())


def kernel_inception_distance(
    real: torch.Tensor, synthetic: torch.Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation of :func:`polynomial_mmd` over ``subsets`` random subsets of
    ``min(subset_size, N, M)`` images drawn from each set (one exact value when that covers both sets)."""
    _check_features(real, synthetic, 2)
    size = min(subset_size, len(real), len(synthetic))
    if size == len(real) == len(synthetic):
        return polynomial_mmd(real, synthetic), 0.0
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor(
        [
            polynomial_mmd(
                real[torch.randperm(len(real), generator=generator)[:size]],
                synthetic[torch.randperm(len(synthetic), generator=generator)[:size]],
            )
            for _ in range(subsets)
        ],
        dtype=torch.float64,
    )
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0


# ---------------------------------------------------------------------------------------------- metrics
class _FeatureSetMetric(Metric):
    """Collects extractor features of ``pred`` (synthetic) and ``label`` (real) over the epoch."""

    def __init__(
        self,
        extractor: Callable[[torch.Tensor], torch.Tensor],
        output_transform=lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        self.extractor = extractor
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._synthetic: list[torch.Tensor] = []
        self._real: list[torch.Tensor] = []

    def update(self, output) -> None:
        synthetic, real = output[0], output[1]
        with torch.no_grad():
            self._synthetic.append(self.extractor(synthetic.detach()).double().cpu())
            self._real.append(self.extractor(real.detach()).double().cpu())

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All real and synthetic features so far."""
        if not self._real:
            raise RuntimeError(f"{type(self).__name__} has no images to measure")
        return torch.cat(self._real), torch.cat(self._synthetic)


class FrechetDistance(_FeatureSetMetric):
    """FID between the epoch's synthetic and real images (:func:`frechet_distance`)."""

    def compute(self) -> float:
        return frechet_distance(*self.features())


class KernelInceptionDistance(_FeatureSetMetric):
    """KID between the epoch's synthetic and real images (:func:`kernel_inception_distance`); the standard
    deviation over subsets goes into ``engine.state.metrics[name + "_std"]``."""

    def __init__(
        self,
        extractor: Callable[[torch.Tensor], torch.Tensor],
        subsets: int = 100,
        subset_size: int = 1000,
        seed: int = 0,
        output_transform=lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        self.subsets, self.subset_size, self.seed = subsets, subset_size, seed
        self.std = float("nan")
        super().__init__(extractor, output_transform=output_transform, device=device)

    def compute(self) -> float:
        mean, self.std = kernel_inception_distance(*self.features(), self.subsets, self.subset_size, self.seed)
        return mean

    def completed(self, engine, name: str) -> None:
        super().completed(engine, name)
        engine.state.metrics[f"{name}_std"] = self.std
