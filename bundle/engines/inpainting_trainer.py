"""MedDiff-FT's inpainting trainer: the shared :class:`bundle.engines.diffusion_trainer.DiffusionTrainer` on an
:class:`bundle.networks.meddiffft_inpainting.InpaintingDiffusion`, the inpainting mask of each batch from a mask
source (random shapes inside the vertebral body for the stand-in foundation, the lesion's first guiding mask for
the fine-tuning)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from bundle.engines.diffusion_trainer import DiffusionTrainer
from bundle.errors import InputError
from bundle.networks.conditions import Conditions
from bundle.networks.meddiffft_inpainting import InpaintingDiffusion, LesionPrompt
from bundle.networks.meddiffft_mask_generator import host_interior, place

MaskSource = Callable[[Mapping], torch.Tensor]
"""A collated batch -> its inpainting masks ``(B, 1, H, W)`` on the image grid."""


class RandomHostMasks:
    """The stand-in foundation's self-supervised masks: per item a box or an ellipse (even odds) of a random size,
    placed uniformly where it lies wholly inside the host (the batch's ``host_key`` above 0.5, eroded by
    ``inset_mm``: the vertebral body's marrow).

    Args:
        diameter_mm: the range of the shape's equivalent diameter (mm), drawn uniformly.
        aspect: the range of its height / width, drawn log-uniformly.
        host_key, inset_mm: the host mask of each item and how far inside its edge the shape stays.
        seed: seeds the draws (one stream for the whole run; its state is a checkpoint object: ``state_dict``).
    """

    def __init__(
        self,
        diameter_mm: Sequence[float] = (6.0, 16.0),
        aspect: Sequence[float] = (0.67, 1.5),
        host_key: str = "soft_mask",
        inset_mm: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.diameter_mm, self.aspect = tuple(diameter_mm), tuple(aspect)
        self.host_key, self.inset_mm = host_key, inset_mm
        self.generator = torch.Generator().manual_seed(seed)

    def shape(self, pixel_mm: float) -> torch.Tensor:
        """One box or ellipse ``(h, w)`` in {0, 1}."""
        low, high = self.diameter_mm
        diameter = (low + (high - low) * float(torch.rand((), generator=self.generator))) / pixel_mm
        aspect = math.exp(
            math.log(self.aspect[0])
            + math.log(self.aspect[1] / self.aspect[0]) * float(torch.rand((), generator=self.generator))
        )
        ellipse = bool(torch.rand((), generator=self.generator) < 0.5)
        area = math.pi * diameter**2 / 4 if ellipse else diameter**2
        width = math.sqrt(area / (math.pi / 4 if ellipse else 1.0) / aspect)
        h, w = max(1, round(width * aspect)), max(1, round(width))
        if not ellipse:
            return torch.ones(h, w)
        rows = (torch.arange(h) + 0.5 - h / 2) / (h / 2)
        cols = (torch.arange(w) + 0.5 - w / 2) / (w / 2)
        return ((rows[:, None] ** 2 + cols[None] ** 2) <= 1.0).float()

    def __call__(self, batch: Mapping) -> torch.Tensor:
        hosts, pixel_mm = batch[self.host_key].cpu(), batch["pixel_mm"].cpu()
        masks = []
        for host, size in zip(hosts, pixel_mm, strict=True):
            inner = host_interior(host, size, self.inset_mm)
            shape = self.shape(float(size.mean()))
            while True:
                try:
                    masks.append(place(shape, inner, self.generator, source="the host mask of a training slice"))
                    break
                except InputError:
                    if shape.numel() == 1:
                        raise
                    shape = shape[::2, ::2]  # too large for this host: halve it
        return torch.stack(masks)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The generator's state, so a resumed run draws the masks the uninterrupted one drew."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


class InpaintingDiffusionTrainer(DiffusionTrainer):
    """``eps_theta([z_t, m, z_masked], t, C)`` against the added noise; the loss sees the mask on z's grid.

    Items whose mask is empty (e.g. a lesion that vanished on the model grid) are left out of the batch.

    Args:
        noise_scheduler: the diffusers training scheduler.
        mask_source: the inpainting masks of a batch (:class:`bundle.transforms.inpaint_masks.RandomHostMasks`,
            :class:`bundle.inferers.guide_mask.FirstGuideMasks`).
        text_dropout: the rate at which the text is dropped (for classifier-free guidance at sampling).
        prompt: the text each item is conditioned on (:class:`LesionPrompt`; default: the item's own ``text``).
        kwargs: those of :class:`DiffusionTrainer`; ``loss_function``
            :class:`bundle.losses.soft_masked_noise.SoftMaskedNoiseLoss` (``mask_weighted=False``: the release's
            plain MSE over the whole image).
    """

    def __init__(
        self,
        noise_scheduler,
        mask_source: MaskSource,
        text_dropout: float = 0.1,
        prompt: LesionPrompt | None = None,
        **kwargs,
    ) -> None:
        super().__init__(noise_scheduler, condition_dropout={"text": text_dropout}, **kwargs)
        self.mask_source = mask_source
        self.prompt = prompt or LesionPrompt()

    def prepare(self, model: InpaintingDiffusion, batch: Mapping) -> tuple[torch.Tensor, Conditions, dict]:
        images = batch["image"]
        mask = self.mask_source(batch).to(images.device, images.dtype)
        kept = mask.flatten(1).any(dim=1)
        if not kept.any():
            raise ValueError(f"no item of the batch has an inpainting mask (cases {list(batch['case_id'])})")
        images, mask = images[kept], mask[kept]
        texts = self.prompt([text for text, keep in zip(batch["text"], kept.tolist(), strict=True) if keep])
        latents = model.space.encode(images)
        conditions = model.conditions(texts, images, mask)
        return latents, conditions, {"mask": conditions["inpaint"][:, :1]}
