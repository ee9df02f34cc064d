"""Sampling the slices of several cases together: the work that is ready at the same time goes into one sampler
call, up to a memory budget.

A whole-volume job has many small sampler calls: in the coherent through-plane mode a case's slices are
sequential (each starts from its inner neighbour's lesion), so one case alone gives calls of one slice (the
centre) and two slices (one ring outward). The slices of *different* cases at the same stage are independent, so
:class:`CrossCaseBatcher` packs them into one call; noise comes from one generator per image, seeded per case, so
a slice's result does not depend on what else is in its call (up to float rounding of the batched UNet).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch


@dataclasses.dataclass(frozen=True)
class SliceTask:
    """One slice to sample on the model grid.

    Args:
        image: x0 ``(1, H, W)`` in [0, 1].
        soft_mask: M_b ``(1, H, W)`` in [0, 1].
        text: the lesion description.
        seed: the seed of this slice's noise.
        start: the image ``(1, H, W)`` the reverse process starts from (SDEdit, noised to the call's strength);
            ``None``: pure noise.
    """

    image: torch.Tensor
    soft_mask: torch.Tensor
    text: str
    seed: int
    start: torch.Tensor | None = None


class CrossCaseBatcher:
    """Runs slice tasks, from any number of cases, through the inferer's
    :meth:`bundle.inferers.soft_mask_inpainting.SoftMaskInpaintingInferer.inpaint` in calls of at most
    ``max_batch_slices`` images each (the memory budget: classifier-free guidance makes the UNet batch twice that).

    Args:
        network: the model the inferer samples.
        inferer: a soft-mask inpainting inferer (``inpaint(images, network, masks, texts, seeds, start=, strength=)``).
        max_batch_slices: the most slice images in one call.
        device: where the images go for sampling.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        inferer: Callable,
        max_batch_slices: int = 8,
        device: torch.device | str = "cpu",
    ) -> None:
        if int(max_batch_slices) < 1:
            raise ValueError(f"max_batch_slices must be at least 1, got {max_batch_slices}")
        self.network, self.inferer = network, inferer
        self.max_batch_slices, self.device = int(max_batch_slices), torch.device(device)

    def stack(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """``tensors`` as one float batch on the sampling device."""
        return torch.stack([torch.as_tensor(t).float() for t in tensors]).to(self.device)

    def __call__(self, tasks: Sequence[SliceTask], strength: float = 1.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(result, content)`` of each task, in order (``inpaint``'s two outputs, each ``(1, H, W)``; results on
        the CPU, contents on the device). Every task starts from a ``start`` image at ``strength``, or every task
        from pure noise: one call's images share their timesteps."""
        starts = {task.start is None for task in tasks}
        if len(starts) > 1:
            raise ValueError("the tasks of one call either all have a start image or none has")
        outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for first in range(0, len(tasks), self.max_batch_slices):
            batch = tasks[first : first + self.max_batch_slices]
            start = None if batch[0].start is None else self.stack([t.start for t in batch])
            result, content = self.inferer.inpaint(
                self.stack([t.image for t in batch]),
                self.network,
                self.stack([t.soft_mask for t in batch]),
                [t.text for t in batch],
                [t.seed for t in batch],
                start=start,
                strength=strength,
            )
            outputs.extend(zip(result.cpu(), content, strict=True))
        return outputs
