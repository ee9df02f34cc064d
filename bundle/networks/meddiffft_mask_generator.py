"""MedDiff-FT's stochastic lesion-mask generator with hierarchical randomness (the project's own definition).

A new lesion mask is drawn in five levels, each from its own random stream, so each can be frozen (the same value
for every draw) to see what it contributes:

1. ``shape``: a binary shape on a ``frame x frame`` grid normalised to the lesion's bounding box, from a small DDPM
   (MONAI ``DiffusionModelUNet`` trained with a ``DDPMScheduler``, sampled with MONAI's ``DDIMScheduler`` over the
   same noise schedule) trained on the real lesion masks' frames
   (:class:`LesionShapeModel`), cleaned to one filled component (:func:`one_component`);
2. ``size``: the equivalent diameter (mm) and the bounding box's aspect, from log-normal distributions fitted to the
   real lesions (:class:`LesionGeometry`);
3. ``placement``: uniformly among the positions where the sized mask lies wholly inside the host (:func:`place`);
4. ``host``: which host structure (e.g. a normal case's vertebral body) receives it;
5. ``seed``: the seed of the image sampler that paints the lesion.

:class:`HierarchicalMaskSampler` draws them in that order of dependence (host, shape, size, placement, seed).
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from scipy import ndimage
from torch import nn

from bundle.errors import InputError
from bundle.transforms.morphology import ErodeMaskMM

LEVELS = ("shape", "size", "placement", "host", "seed")


def shape_frame(mask: torch.Tensor, frame: int = 16) -> torch.Tensor:
    """A 2-D mask ``(H, W)`` cropped to its bounding box and resized to ``(1, frame, frame)`` in {0, 1}."""
    inside = torch.nonzero(torch.as_tensor(mask) > 0.5)
    if inside.numel() == 0:
        raise ValueError("an empty mask has no shape")
    (top, left), (bottom, right) = inside.min(dim=0).values, inside.max(dim=0).values
    crop = (torch.as_tensor(mask)[top : bottom + 1, left : right + 1] > 0.5).float()[None, None]
    return (F.interpolate(crop, size=(frame, frame), mode="bilinear", align_corners=False)[0] > 0.5).float()


def one_component(masks: torch.Tensor) -> torch.Tensor:
    """``(N, 1, H, W)`` binary masks reduced to their largest 4-connected component, holes filled (scipy's
    ``ndimage``; MONAI's ``KeepLargestConnectedComponent`` would need scikit-image). An empty mask stays empty."""
    out = torch.zeros_like(masks, dtype=torch.float32)
    for index, mask in enumerate(masks):
        labels, count = ndimage.label(mask[0].numpy() > 0.5)
        if count:
            largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
            out[index, 0] = torch.as_tensor(ndimage.binary_fill_holes(largest), dtype=torch.float32)
    return out


def mask_geometry(mask: torch.Tensor, pixel_mm: float) -> tuple[float, float]:
    """A 2-D mask's ``(H, W)`` equivalent diameter (mm) on square ``pixel_mm`` pixels and its bounding box's aspect
    (height / width)."""
    inside = torch.nonzero(torch.as_tensor(mask) > 0.5).float()
    if inside.numel() == 0:
        raise ValueError("an empty mask has no geometry")
    extent = inside.max(dim=0).values - inside.min(dim=0).values + 1
    return 2.0 * math.sqrt(len(inside) * float(pixel_mm) ** 2 / math.pi), float(extent[0] / extent[1])


def host_interior(host: torch.Tensor, pixel_mm: Sequence[float], inset_mm: float) -> torch.Tensor:
    """The host structure ``(1, H, W)`` (values above 0.5 inside, e.g. a vertebra's soft mask) eroded by ``inset_mm``
    on ``pixel_mm`` (row, column) pixels: where a lesion may lie, ``(H, W)`` in {0, 1}."""
    return ErodeMaskMM(inset_mm, spacing_mm=[float(s) for s in pixel_mm])((torch.as_tensor(host) > 0.5).float())[0]


@dataclass
class LesionGeometry:
    """Log-normal size and aspect of lesions: ``log(diameter_mm) ~ N(log_diameter_mean, log_diameter_std)`` (the
    equivalent diameter) and ``log(aspect) ~ N(...)`` (bounding-box height / width)."""

    log_diameter_mean: float
    log_diameter_std: float
    log_aspect_mean: float
    log_aspect_std: float

    @classmethod
    def fit(cls, masks: Sequence[torch.Tensor], pixel_mm: Sequence[float]) -> LesionGeometry:
        """Maximum-likelihood fit to 2-D masks ``(H, W)``, one square pixel size (mm) per mask."""
        if len(masks) < 2 or len(masks) != len(pixel_mm):
            raise ValueError(f"need at least two masks, each with its pixel size; got {len(masks)}, {len(pixel_mm)}")
        log_d, log_a = torch.tensor([mask_geometry(m, s) for m, s in zip(masks, pixel_mm, strict=True)]).log().T
        return cls(
            float(log_d.mean()), float(log_d.std(correction=0)), float(log_a.mean()), float(log_a.std(correction=0))
        )

    def draw(self, generator: torch.Generator) -> tuple[float, float]:
        """One ``(diameter_mm, aspect)``."""
        normal = torch.randn(2, generator=generator, dtype=torch.float64)
        diameter = math.exp(self.log_diameter_mean + self.log_diameter_std * float(normal[0]))
        return diameter, math.exp(self.log_aspect_mean + self.log_aspect_std * float(normal[1]))


def sized_shape(shape: torch.Tensor, diameter_mm: float, aspect: float, pixel_mm: float) -> torch.Tensor:
    """A shape frame ``(1, F, F)`` resized to a mask ``(h, w)`` of equivalent diameter ``diameter_mm`` and bounding
    box ``h / w = aspect`` on ``pixel_mm`` pixels (the shape fills its bounding box as it fills the frame, once the
    frame is cropped to the shape)."""
    shape = shape_frame(shape[0], shape.shape[-1])
    fill = float(shape.mean())
    area_px = math.pi * diameter_mm**2 / 4.0 / pixel_mm**2
    width = max(1, round(math.sqrt(area_px / (fill * aspect))))
    height = max(1, round(aspect * width))
    resized = F.interpolate(shape[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return (resized > 0.5).float() if (resized > 0.5).any() else (resized >= resized.max()).float()


def place(mask: torch.Tensor, host: torch.Tensor, generator: torch.Generator, source: str = "host") -> torch.Tensor:
    """``mask`` ``(h, w)`` put at a position drawn uniformly among those where it lies wholly inside ``host``
    ``(H, W)``; returns ``(1, H, W)``.

    Raises:
        InputError: naming ``source``, when no position fits (the host is too small for the lesion).
    """
    host = (torch.as_tensor(host) > 0.5).float()
    h, w = mask.shape
    if h > host.shape[0] or w > host.shape[1]:
        fits = torch.zeros(0, 2, dtype=torch.long)
    else:
        outside = F.conv2d((1.0 - host)[None, None], mask[None, None].float())[0, 0]
        fits = torch.nonzero(outside == 0)
    if len(fits) == 0:
        raise InputError(source, f"no position fits a {h} x {w} px lesion wholly inside the host structure")
    top, left = fits[int(torch.randint(len(fits), (1,), generator=generator))].tolist()
    placed = torch.zeros_like(host)
    placed[top : top + h, left : left + w] = mask
    return placed[None]


class LesionShapeModel(nn.Module):
    """Level 1: a DDPM over lesion shape frames ``(1, frame, frame)`` (values -1 / 1).

    Args:
        frame: the shape frame's side in pixels.
        channels: the UNet's channels per level (``norm_num_groups`` 8 divides them).
        num_train_timesteps: the DDPM's training steps.
        num_inference_steps: the DDIM sampling steps (eta 0: the shape is a function of the initial noise).
        seed: initialises the weights.
    """

    def __init__(
        self,
        frame: int = 16,
        channels: Sequence[int] = (16, 32),
        num_train_timesteps: int = 200,
        num_inference_steps: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.frame = frame
        self.num_inference_steps = num_inference_steps
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.unet = DiffusionModelUNet(
                spatial_dims=2,
                in_channels=1,
                out_channels=1,
                channels=tuple(channels),
                attention_levels=(False,) * len(channels),
                num_res_blocks=1,
                norm_num_groups=8,
            )
        self.scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps)
        self.sampler = DDIMScheduler(num_train_timesteps=num_train_timesteps)

    def fit(
        self, frames: torch.Tensor, steps: int, batch_size: int = 32, learning_rate: float = 2e-3, seed: int = 0
    ) -> list[float]:
        """Train on ``frames`` ``(N, 1, frame, frame)`` in {0, 1} (random flips and 90-degree turns as
        augmentation) for ``steps`` optimiser steps; returns the losses."""
        generator = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.AdamW(self.unet.parameters(), lr=learning_rate)
        data = frames.float() * 2.0 - 1.0
        losses = []
        self.unet.train()
        for _ in range(steps):
            batch = data[torch.randint(len(data), (batch_size,), generator=generator)]
            if bool(torch.randint(2, (1,), generator=generator)):
                batch = batch.flip(-1)
            batch = torch.rot90(batch, int(torch.randint(4, (1,), generator=generator)), dims=(-2, -1))
            noise = torch.randn(batch.shape, generator=generator)
            timesteps = torch.randint(self.scheduler.num_train_timesteps, (batch_size,), generator=generator)
            loss = F.mse_loss(self.unet(self.scheduler.add_noise(batch, noise, timesteps), timesteps), noise)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        self.unet.eval()
        return losses

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator, clean: bool = True) -> torch.Tensor:
        """``count`` shape frames ``(count, 1, frame, frame)`` in {0, 1} from ``generator``; ``clean``: one filled
        component each (:func:`one_component`)."""
        shapes = torch.randn(count, 1, self.frame, self.frame, generator=generator)
        self.sampler.set_timesteps(self.num_inference_steps)
        for timestep in self.sampler.timesteps:
            noise = self.unet(shapes, torch.full((count,), int(timestep), dtype=torch.long))
            shapes, _ = self.sampler.step(noise, int(timestep), shapes)
        binary = (shapes > 0).float()
        return one_component(binary) if clean else binary


def level_generator(seed: int, level: str, draw: int) -> torch.Generator:
    """The random stream of one level for one draw (``draw`` 0 for a frozen level)."""
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}/{level}/{draw}".encode()))


@dataclass
class MaskDraw:
    """One drawn lesion mask and the value of each level that made it."""

    mask: torch.Tensor  # (1, H, W) on the host's grid
    host_index: int
    shape: torch.Tensor  # (1, frame, frame)
    diameter_mm: float
    aspect: float
    sampler_seed: int
    tries: int = 1  # lesions drawn until one fitted its host


class HierarchicalMaskSampler:
    """Draw lesion masks inside host structures, each level of randomness on its own stream (module docstring).

    Args:
        shape_model: the trained :class:`LesionShapeModel`.
        geometry: the fitted :class:`LesionGeometry`.
        hosts: the host structures, each ``(H, W)`` (values above 0.5 inside), on square pixels of ``pixel_mm``.
        pixel_mm: one pixel size (mm) per host.
        seed: the seed all levels derive their streams from.
        frozen: levels (of :data:`LEVELS`) that take the same value at every draw (their draw-0 value).
        max_tries: a lesion that fits nowhere inside its host is drawn again (the next values of the same streams:
            sizes conditioned on fitting the host), up to this many lesions per draw.
    """

    def __init__(
        self,
        shape_model: LesionShapeModel | None,
        geometry: LesionGeometry | None,
        hosts: Sequence[torch.Tensor],
        pixel_mm: Sequence[float],
        seed: int = 0,
        frozen: Sequence[str] = (),
        max_tries: int = 20,
    ) -> None:
        unknown = sorted(set(frozen) - set(LEVELS))
        if unknown:
            raise ValueError(f"unknown levels {unknown}; the levels are {list(LEVELS)}")
        if not hosts or len(hosts) != len(pixel_mm):
            raise ValueError(f"need at least one host, each with its pixel size; got {len(hosts)}, {len(pixel_mm)}")
        self.shape_model, self.geometry = shape_model, geometry
        self.hosts, self.pixel_mm = list(hosts), [float(s) for s in pixel_mm]
        self.seed, self.frozen, self.max_tries = int(seed), frozenset(frozen), max(1, int(max_tries))

    def generator(self, level: str, draw: int) -> torch.Generator:
        return level_generator(self.seed, level, 0 if level in self.frozen else draw)

    def lesions(self, index: int) -> Iterator[tuple[torch.Tensor, float, float]]:
        """Levels 1 and 2 of draw ``index``: one shape frame ``(1, F, F)``, then diameters (mm) and aspects for it
        from the size stream."""
        shape = self.shape_model.sample(1, self.generator("shape", index))[0]
        sizes = self.generator("size", index)
        while True:
            yield (shape, *self.geometry.draw(sizes))

    def host_of(self, index: int) -> int:
        """Level 4 of draw ``index``: which host receives the lesion."""
        return int(torch.randint(len(self.hosts), (1,), generator=self.generator("host", index)))

    def draw(self, index: int) -> MaskDraw:
        """Draw number ``index`` (the same index and settings give the same draw).

        Raises:
            InputError: naming the host, when the drawn lesion fits nowhere inside it.
        """
        host_index = self.host_of(index)
        placement = self.generator("placement", index)
        for tries, (shape, diameter, aspect) in enumerate(itertools.islice(self.lesions(index), self.max_tries), 1):
            sized = sized_shape(shape, diameter, aspect, self.pixel_mm[host_index])
            try:
                mask = place(sized, self.hosts[host_index], placement, f"host {host_index}")
                break
            except InputError as error:
                if tries == self.max_tries:
                    raise InputError(f"host {host_index}", f"{error.problem} ({tries} lesions drawn)") from error
        sampler_seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator("seed", index)))
        return MaskDraw(mask, host_index, shape, diameter, aspect, sampler_seed, tries)


def fit_shape_model(
    masks: Sequence[torch.Tensor], steps: int, frame: int = 16, batch_size: int = 16, seed: int = 0
) -> LesionShapeModel:
    """Level 1 trained on real lesion masks ``(H, W)``: a :class:`LesionShapeModel` fitted for ``steps`` optimiser
    steps on their shape frames (:func:`shape_frame`)."""
    if not masks:
        raise ValueError("the lesion shape model needs at least one real lesion mask")
    model = LesionShapeModel(frame=frame, seed=seed)
    model.fit(torch.stack([shape_frame(mask, frame) for mask in masks]), steps, batch_size=batch_size, seed=seed)
    return model


class RealMaskSampler(HierarchicalMaskSampler):
    """The ablation "real masks re-placed": level 1 draws one of the real lesion masks (uniformly) and level 2 is
    that mask's own size and aspect (in mm, so it keeps its physical size on a host of another pixel size); placement,
    host and seed are drawn as by :class:`HierarchicalMaskSampler` (the real lesion moved into a normal host).

    Args:
        real_masks: the real lesion masks ``(H, W)``, each on square pixels of ``real_pixel_mm``.
        real_pixel_mm: one pixel size (mm) per real mask.
        hosts, pixel_mm: :class:`HierarchicalMaskSampler`'s.
        levels: :class:`HierarchicalMaskSampler`'s ``seed``, ``frozen``, ``max_tries``, by name.
    """

    def __init__(
        self,
        real_masks: Sequence[torch.Tensor],
        real_pixel_mm: Sequence[float],
        hosts: Sequence[torch.Tensor],
        pixel_mm: Sequence[float],
        **levels,
    ) -> None:
        if not real_masks or len(real_masks) != len(real_pixel_mm):
            raise ValueError(f"need real masks, each with its pixel size; got {len(real_masks)}, {len(real_pixel_mm)}")
        super().__init__(None, None, hosts, pixel_mm, **levels)
        self.frames = [shape_frame(mask) for mask in real_masks]
        self.sizes = [mask_geometry(mask, size) for mask, size in zip(real_masks, real_pixel_mm, strict=True)]

    def lesions(self, index: int) -> Iterator[tuple[torch.Tensor, float, float]]:
        """Real masks drawn uniformly from the shape stream, each with its own size and aspect."""
        shapes = self.generator("shape", index)
        while True:
            real = int(torch.randint(len(self.frames), (1,), generator=shapes))
            yield (self.frames[real], *self.sizes[real])
