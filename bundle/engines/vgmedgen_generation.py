"""VG-MedGen's generation job: crops sampled from captions by the trained generator (stage G) with the shared
:class:`bundle.inferers.guided_sampler.GuidedSampler` (classifier-free guidance), each segmented by the trained
stage-V head and handed to a writer (in the config :class:`bundle.io.crop_writer.GeneratedCropWriter`), then a
report, a datalist the classifier reads and the review page.

Requests are datalist entries with ``text``, ``label`` and ``class_index`` (e.g. the captioned training split);
each gives ``copies`` crops, crop ``k`` of request ``i`` with seed ``seed + i * copies + k`` (reproducible one by
one, whatever the batch). A request that carries its own crop geometry (``crop_pixel_mm``: rows, columns in mm;
``crop_origin_mm``: the RAS position of its first voxel, e.g. the source case's working window) gives its crops
that geometry; one with ``crop_window_mm`` instead (the extent, rows and columns in mm, of the source case's working
window, as the captioner writes it) gives them the pixel size that spans that extent at the job's ``spatial_size``;
the others get the job's ``pixel_mm``. A crop in which the stage-V head finds no vertebra is not
written (the classifier could not place its working window on it) and a crop that fails to be written is listed
with its error; the others are written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bundle.errors import InputError, OutputError
from bundle.inferers.guided_sampler import GuidedSampler
from bundle.networks.vgmedgen_generator import VGMedGen
from bundle.networks.vgmedgen_visual import VisualDisentangler
from bundle.utils.files import write_json_atomically

logger = logging.getLogger(__name__)

REQUEST_KEYS = ("text", "label", "class_index")
NO_VERTEBRA = (
    "the stage-V segmentation head finds no vertebra in the generated crop, so the classifier could not place its "
    "working window on it"
)


def _check_geometry(request: Mapping, index: int) -> None:
    """A request's own crop geometry, where it has one: ``crop_pixel_mm`` and ``crop_window_mm`` 2 positive numbers,
    ``crop_origin_mm`` 3 finite numbers."""
    for key, count, positive in (("crop_pixel_mm", 2, True), ("crop_window_mm", 2, True), ("crop_origin_mm", 3, False)):
        if request.get(key) is None:
            continue
        try:
            values = np.asarray(request[key], dtype=np.float64)
        except (TypeError, ValueError):
            values = np.full(0, np.nan)
        if values.shape != (count,) or not np.all(np.isfinite(values)) or (positive and not np.all(values > 0)):
            raise InputError(
                request.get("case_id", f"request {index}"),
                f"{key} must be {count} {'positive' if positive else 'finite'} numbers (mm), got {request[key]!r}",
            )


class CaptionGenerationJob:
    """Generate, segment and write crops for ``requests`` (see the module docstring).

    Args:
        network: the trained :class:`VGMedGen`.
        sampler: the :class:`GuidedSampler` (DPM-Solver++ 20 steps, guidance 4.5 in the config).
        segmenter: the trained stage-V :class:`VisualDisentangler` (its segmentation head labels each crop).
        requests: entries with ``text``, ``label``, ``class_index`` (and ``case_id``).
        writer: ``(crop (1, S, S), segmentation (S, S), pixel_mm, details) -> {"volume", ..., "provenance"}``.
        output_dir: where ``report.json`` goes.
        spatial_size: ``S``; pixel_mm: the crop's pixel size (rows, columns) for requests without their own
            ``crop_pixel_mm`` or ``crop_window_mm``.
        copies: crops per request; seed: the first crop's seed; batch_size: crops sampled together.
        datalist: ``(path, crops, dropped) -> path`` writing the classifier's datalist from the written crops'
            entries (in the config :func:`bundle.io.pair_writer.write_pair_datalist` over
            :func:`bundle.io.crop_writer.crop_entry`), or None.
        entry: ``(details, outputs) -> datalist entry`` (:func:`bundle.io.crop_writer.crop_entry`).
        gallery: ``report -> page path`` (:class:`bundle.io.gallery.ReviewGallery`), or None.
    """

    def __init__(
        self,
        network: VGMedGen,
        sampler: GuidedSampler,
        segmenter: VisualDisentangler,
        requests: Sequence[Mapping],
        writer: Callable[..., Mapping[str, str]],
        output_dir: str | os.PathLike,
        spatial_size: int,
        pixel_mm: Sequence[float],
        copies: int = 1,
        seed: int = 0,
        batch_size: int = 8,
        datalist: Callable[..., os.PathLike] | None = None,
        entry: Callable[[Mapping, Mapping], Mapping] | None = None,
        gallery: Callable[[Mapping[str, object]], os.PathLike] | None = None,
    ) -> None:
        for index, request in enumerate(requests):
            missing = [key for key in REQUEST_KEYS if key not in request]
            if missing or not str(request.get("text", "")).strip():
                raise InputError(
                    request.get("case_id", f"request {index}"), f"a generation request needs {REQUEST_KEYS}"
                )
            _check_geometry(request, index)
        self.network, self.sampler, self.segmenter = network.eval(), sampler, segmenter.eval()
        self.requests, self.writer = list(requests), writer
        self.output_dir = Path(output_dir)
        self.spatial_size, self.pixel_mm = int(spatial_size), [float(p) for p in pixel_mm]
        self.copies, self.seed, self.batch_size = int(copies), int(seed), int(batch_size)
        self.datalist, self.entry, self.gallery = datalist, entry, gallery

    def request_pixel_mm(self, request: Mapping) -> list[float]:
        """A request's crop pixel size (rows, columns in mm): its ``crop_pixel_mm``, else its ``crop_window_mm``
        over ``spatial_size``, else the job's ``pixel_mm``."""
        if request.get("crop_pixel_mm") is not None:
            return [float(p) for p in request["crop_pixel_mm"]]
        if request.get("crop_window_mm") is not None:
            return [float(w) / self.spatial_size for w in request["crop_window_mm"]]
        return list(self.pixel_mm)

    def crops(self) -> list[dict[str, object]]:
        """Every crop's details: case id, text, label, class index, seed, source request, pixel size (and the
        origin, where the request has one)."""
        crops = []
        for i, request in enumerate(self.requests):
            source = str(request.get("case_id", f"request_{i:04d}"))
            geometry = {"pixel_mm": self.request_pixel_mm(request)}
            if request.get("crop_origin_mm") is not None:
                geometry["origin_mm"] = [float(v) for v in request["crop_origin_mm"]]
            for k in range(self.copies):
                crops.append(
                    {
                        "case_id": f"vgmedgen_{source}_{k:02d}",
                        "text": request["text"],
                        "label": request["label"],
                        "class_index": request["class_index"],
                        "seed": self.seed + i * self.copies + k,
                        "source_case": source,
                        **geometry,
                    }
                )
        return crops

    @torch.no_grad()
    def generate(self, texts: Sequence[str], seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops ``(B, 1, S, S)`` in [0, 1] for ``texts`` with one seed each, and their segmentation ``(B, S, S)``."""
        device = next(self.network.denoiser.parameters()).device
        like = torch.zeros(len(texts), self.network.space.channels, self.spatial_size, self.spatial_size, device=device)
        latents = self.sampler(like, self.network, self.network.conditions(list(texts)), seeds=list(seeds))
        crops = self.network.space.decode(latents)
        return crops, self.segment(crops)

    def segment(self, crops: torch.Tensor) -> torch.Tensor:
        """The stage-V head's labels ``(B, S, S)`` of crops ``(B, 1, S, S)``; crops of another size than the head's
        (the full profile's 512 px) are area-resized to it, as the classifier sees its window, and the labels
        brought back (nearest)."""
        size = int(self.segmenter.settings["image_size"])
        if crops.shape[-1] == size:
            return self.segmenter(crops)["segmentation"].argmax(dim=1)
        small = F.interpolate(crops, size=(size, size), mode="area")
        labels = self.segmenter(small)["segmentation"].argmax(dim=1, keepdim=True).float()
        return F.interpolate(labels, size=crops.shape[-2:], mode="nearest")[:, 0].long()

    def run(self) -> dict[str, object]:
        crops = self.crops()
        self.output_dir.mkdir(parents=True, exist_ok=True)  # the report is written even when no crop is
        written, failed, entries = [], [], []
        for start in range(0, len(crops), self.batch_size):
            batch = crops[start : start + self.batch_size]
            images, labels = self.generate([c["text"] for c in batch], [c["seed"] for c in batch])
            for details, image, label in zip(batch, images, labels, strict=True):
                if not bool((label >= 1).any()):
                    failed.append({"case_id": details["case_id"], "error": NO_VERTEBRA})
                    logger.warning("%s not written: %s", details["case_id"], NO_VERTEBRA)
                    continue
                try:
                    outputs = self.writer(image.cpu(), label.cpu(), details["pixel_mm"], details)
                except (OutputError, OSError) as error:
                    failed.append({"case_id": details["case_id"], "error": str(error)})
                    logger.error("%s failed: %s", details["case_id"], error)
                    continue
                written.append({"case_id": details["case_id"], **outputs})
                if self.entry is not None:
                    entries.append(self.entry(details, outputs))
            logger.info("%d of %d crops generated", min(start + self.batch_size, len(crops)), len(crops))
        report: dict[str, object] = {"written": written, "skipped": [], "failed": failed, "num_cases": len(crops)}
        if self.datalist is not None:
            report["datalist"] = str(self.datalist(self.output_dir / "datalist.json", entries, dropped=failed))
        write_json_atomically(self.output_dir / "report.json", report)
        if self.gallery is not None:
            logger.info("review gallery: %s", self.gallery(report))
        return report
