"""MedDiff-FT's pair job: lesion masks drawn into normal host vertebrae, painted by the fine-tuned inpainting model.

A *pair request* is a normal host case (a datalist entry) with the index of a mask draw. :class:`PairHosts` cuts each
host case's slice on the model grid and its host structure (the vertebra's soft mask above 0.5, eroded by
``inset_mm``: where a lesion may lie); the mask sampler
(:class:`bundle.networks.meddiffft_mask_generator.HierarchicalMaskSampler`, or the ablation's
:class:`~bundle.networks.meddiffft_mask_generator.RealMaskSampler`) draws each pair's host, lesion shape, size,
placement and sampler seed; :class:`LesionPairs` turns the draws into the synthesis job's cases (the host entry with
a real lesion case's text and class, in turn) and is the job's preprocessing (the host's slice item with the drawn
lesion mask and seed); :class:`GuidedPairPredictor` paints each item under the dynamic guiding mask, the host
structure being the slice's soft mask above 0.5.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from bundle.data.slice_dataset import pixel_size
from bundle.engines.synthesis_job import DiffusionPredictor
from bundle.errors import InputError
from bundle.networks.meddiffft_inpainting import LesionPrompt
from bundle.networks.meddiffft_mask_generator import HierarchicalMaskSampler, MaskDraw, host_interior, one_component

logger = logging.getLogger(__name__)

Preprocessing = Callable[[dict], list[dict]]
# a normal host's entry keys that describe the host, not the pair (the pair takes a real lesion case's text and class)
HOST_ONLY_KEYS = ("attributes", "class_index", "lesion_seg", "label", "text")


def slice_items(entry: Mapping, preprocessing: Preprocessing) -> list[dict]:
    """An entry's slice items on the model grid (``preprocessing`` may return one item or a list)."""
    items = preprocessing(dict(entry))
    return items if isinstance(items, list) else [items]


def real_lesion_slices(
    entries: Sequence[Mapping], preprocessing: Preprocessing, key: str = "lesion_mask"
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[float]]:
    """The real lesion cases' slices on the model grid that hold a lesion: their images ``(1, H, W)``, lesion masks
    ``(H, W)`` and pixel sizes (mm), every slice item of each entry whose mask is not empty (a small lesion can vanish
    on the grid)."""
    images, masks, sizes = [], [], []
    for entry in entries:
        for item in slice_items(entry, preprocessing):
            mask = torch.as_tensor(item[key]).as_subclass(torch.Tensor)[0] > 0.5
            if mask.any():
                images.append(torch.as_tensor(item["image"]).as_subclass(torch.Tensor).float())
                masks.append(mask.float())
                sizes.append(float(pixel_size(item["image"]).mean()))
    if not masks:
        raise ValueError(f"none of the {len(entries)} real lesion cases has a lesion on the model grid")
    return images, masks, sizes


def real_lesion_masks(
    entries: Sequence[Mapping], preprocessing: Preprocessing, key: str = "lesion_mask"
) -> tuple[list[torch.Tensor], list[float]]:
    """:func:`real_lesion_slices`' masks and pixel sizes."""
    _, masks, sizes = real_lesion_slices(entries, preprocessing, key)
    return masks, sizes


class PairHosts:
    """The normal host cases and, for each, where a lesion may lie on its slice of the model grid.

    Args:
        entries: the normal cases (datalist entries).
        preprocessing: entry -> its slice items (the pair job's; the first item is the host slice).
        inset_mm: how far inside the host structure's edge (the soft mask above 0.5) a lesion stays.
        largest_part: keep only the host structure's largest connected part: on a sagittal slice through the body,
            the vertebral body without the posterior elements a vertebra label also covers (e.g. the phantom's).

    A host that cannot be read, or whose host structure erodes to nothing, is left out with a warning
    (``refused`` lists them); none left is an error.
    """

    def __init__(
        self, entries: Sequence[Mapping], preprocessing: Preprocessing, inset_mm: float = 1.0, largest_part: bool = True
    ) -> None:
        self.largest_part = largest_part
        self.entries: list[dict] = []
        self.masks: list[torch.Tensor] = []
        self.pixel_mm: list[float] = []
        self.refused: list[dict[str, str]] = []
        for entry in entries:
            case_id = str(entry.get("case_id", entry.get("image")))
            try:
                item = slice_items(entry, preprocessing)[0]
                pixel = pixel_size(item["image"])
                interior = host_interior(self.structure(item["soft_mask"]), pixel, inset_mm)
                if not interior.any():
                    raise InputError(case_id, f"the host structure erodes to nothing at {inset_mm} mm")
            except Exception as error:  # one bad host does not lose the others
                logger.warning("host %s left out: %s", case_id, error)
                self.refused.append({"case_id": case_id, "error": str(error)})
                continue
            self.entries.append(dict(entry))
            self.masks.append(interior)
            self.pixel_mm.append(float(pixel.mean()))
        if not self.entries:
            raise ValueError(f"none of the {len(entries)} host cases can receive a lesion: {self.refused}")

    def structure(self, soft_mask: torch.Tensor) -> torch.Tensor:
        """A slice's host structure ``(1, H, W)`` in {0, 1}: its soft mask above 0.5, cut to the largest connected
        part with ``largest_part``."""
        inside = (torch.as_tensor(soft_mask).as_subclass(torch.Tensor) > 0.5).float()
        return one_component(inside[None])[0] if self.largest_part else inside


class LesionPairs:
    """The pair job's cases and its preprocessing. A pair whose drawn lesion fits nowhere inside its host is still
    requested and fails in the job by name (listed as dropped), so the others go on.

    Args:
        hosts: the :class:`PairHosts` the sampler draws into (its ``hosts`` are ``hosts.masks``).
        sampler: draws each pair's mask (:meth:`HierarchicalMaskSampler.draw`).
        lesion_cases: the real lesion cases whose texts and classes the pairs take, in turn (pair ``i`` takes case
            ``i mod len``).
        num_pairs: how many pairs to request.
        preprocessing: entry -> its slice items, as given to :class:`PairHosts`.
        quality_label: the class the quality filter judges every pair as (the filter fitted on the pooled real
            lesion slices).
        prompt: the text a pair is painted with, from its real lesion case's text (:class:`LesionPrompt`, as in the
            fine-tuning; default: that text itself). It is the request's ``text`` (so the provenance records it).
    """

    def __init__(
        self,
        hosts: PairHosts,
        sampler: HierarchicalMaskSampler,
        lesion_cases: Sequence[Mapping],
        num_pairs: int,
        preprocessing: Preprocessing,
        quality_label: str = "lesion",
        prompt: LesionPrompt | None = None,
    ) -> None:
        prompt = prompt or LesionPrompt()
        if num_pairs < 1 or not lesion_cases:
            raise ValueError(f"need num_pairs >= 1 and real lesion cases, got {num_pairs} and {len(lesion_cases)}")
        self.hosts, self.sampler, self.preprocessing = hosts, sampler, preprocessing
        self.draws: dict[int, MaskDraw | InputError] = {}
        self.requests: list[dict] = []
        for index in range(int(num_pairs)):
            host = hosts.entries[sampler.host_of(index)]
            try:
                self.draws[index] = sampler.draw(index)
            except InputError as error:  # the lesion fits nowhere in its host: this pair fails, the others go on
                self.draws[index] = error
            source = lesion_cases[index % len(lesion_cases)]
            self.requests.append(
                {
                    **{key: value for key, value in host.items() if key not in HOST_ONLY_KEYS},
                    "case_id": f"{host.get('case_id', 'host')}_meddiffft_{index:04d}",
                    "label": source["label"],
                    "text": prompt([source["text"]])[0],
                    "quality_label": quality_label,
                    "pair_index": index,
                    "host_case": host.get("case_id"),
                    "text_case": source.get("case_id"),
                }
            )

    def __call__(self, entry: Mapping) -> list[dict]:
        """A request's host slice item with ``lesion_mask`` (the drawn mask ``(1, H, W)``), ``host_mask`` (the host
        structure the guides stay in, :meth:`PairHosts.structure`), ``seed`` (the drawn sampler seed) and
        ``lesion_pair`` (each level's value, for the provenance record)."""
        draw = self.draws[int(entry["pair_index"])]
        if isinstance(draw, InputError):
            raise InputError(entry.get("case_id"), f"no lesion drawn: {draw}")
        item = slice_items(entry, self.preprocessing)[0]
        if tuple(item["soft_mask"].shape) != tuple(draw.mask.shape):
            raise InputError(entry.get("case_id"), "the host slice differs from the one its lesion was drawn on")
        item["lesion_mask"] = draw.mask
        item["host_mask"] = self.hosts.structure(item["soft_mask"])
        item["seed"] = draw.sampler_seed
        item["lesion_pair"] = {
            "pair_index": int(entry["pair_index"]),
            "host_case": entry.get("host_case"),
            "text_case": entry.get("text_case"),
            "diameter_mm": round(draw.diameter_mm, 3),
            "aspect": round(draw.aspect, 3),
            "lesion_pixels": int(draw.mask.sum()),
            "lesions_drawn": draw.tries,
            "mask_sampler": type(self.sampler).__name__,
            "frozen_levels": sorted(self.sampler.frozen),
        }
        return [item]


class GuidedPairPredictor(DiffusionPredictor):
    """Paints each item's ``lesion_mask`` with the inpainting model under the guide schedule
    (:class:`bundle.inferers.guided_inpainting.GuidedInpaintingInferer` with a ``guide_schedule``): the host
    structure is the item's ``host_mask``, the seed the item's own (the draw's); arguments as
    :class:`DiffusionPredictor`'s (no through-plane mode)."""

    def __call__(self, items: Sequence[Mapping]) -> list[torch.Tensor]:
        results, size = [], self.batcher.max_batch_slices
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            lesion = (self.batcher.stack([item["lesion_mask"] for item in batch]) > 0.5).float()
            painted = self.inferer(
                self.batcher.stack([item["image"] for item in batch]),
                self.network,
                lesion,
                [str(item["text"]) for item in batch],
                [int(item["seed"]) for item in batch],
                lesion_mask=lesion,
                host_mask=self.batcher.stack([item["host_mask"] for item in batch]),
                pixel_mm=[float(pixel_size(item["image"]).mean()) for item in batch],
            )
            results.extend(painted.cpu())
        return results


def _bounding_box(mask: torch.Tensor) -> tuple[slice, slice]:
    inside = torch.nonzero(mask > 0.5)
    (top, left), (bottom, right) = inside.min(dim=0).values.tolist(), inside.max(dim=0).values.tolist()
    return slice(top, bottom + 1), slice(left, right + 1)


class CopyPastePredictor:
    """The copy-paste baseline (no model): each item's ``lesion_mask`` (a real lesion mask re-placed in a normal host by
    :class:`~bundle.networks.meddiffft_mask_generator.RealMaskSampler`) is filled with a real lesion's pixels.

    The source is the real lesion whose mask, resized to the drawn mask's bounding box, overlaps the drawn mask most
    (the sampler drew one of these masks, so it is that lesion); its image's bounding-box crop is resized (bilinear) to
    the drawn box and pasted inside the drawn mask, the host unchanged outside it (a hard paste, as in copy-paste
    augmentation). The written label is the drawn mask.

    Args:
        real_lesions: :func:`real_lesion_slices`' result (images, masks, pixel sizes).
    """

    def __init__(self, real_lesions: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor], Sequence[float]]) -> None:
        images, masks, _ = real_lesions
        if not masks or len(images) != len(masks):
            raise ValueError(f"need real lesion images and masks, got {len(images)} and {len(masks)}")
        self.sources = []
        for image, mask in zip(images, masks, strict=True):
            box = _bounding_box(mask)
            self.sources.append((image[0][box][None, None].float(), (mask[box] > 0.5).float()[None, None]))

    def source_of(self, drawn: torch.Tensor) -> int:
        """The index of the real lesion that best matches the drawn mask ``(h, w)`` (its bounding-box crop): the
        highest IoU of the real mask resized to the drawn box, less the log-ratios of the two boxes' heights and
        widths (a real mask is re-placed at its own size, so its box is the drawn one)."""
        scores = []
        for _, mask in self.sources:
            resized = F.interpolate(mask, size=tuple(drawn.shape), mode="nearest")[0, 0] > 0.5
            iou = float((resized & drawn).sum()) / float((resized | drawn).sum())
            size = sum(abs(math.log(a / b)) for a, b in zip(mask.shape[-2:], drawn.shape, strict=True))
            scores.append(iou - size)
        return int(max(range(len(scores)), key=scores.__getitem__))

    def __call__(self, items: Sequence[Mapping]) -> list[torch.Tensor]:
        results = []
        for item in items:
            image = torch.as_tensor(item["image"]).as_subclass(torch.Tensor).float()
            drawn = torch.as_tensor(item["lesion_mask"]).as_subclass(torch.Tensor)[0] > 0.5
            if not drawn.any():
                raise InputError(item.get("case_id"), "the drawn lesion mask is empty; nothing to paste")
            box = _bounding_box(drawn)
            inside = drawn[box]
            patch = self.sources[self.source_of(inside)][0]
            patch = F.interpolate(patch, size=tuple(inside.shape), mode="bilinear", align_corners=False)[0, 0]
            pasted = image.clone()
            pasted[0][box] = torch.where(inside, patch, image[0][box])
            results.append(pasted)
        return results
