"""Intensity normalisation to the model's range, with the inverse recorded for the writer."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, Transform

from bundle.errors import InputError


class ScaleIntensityToModel(Transform):
    """Map the volume's ``[p_low, p_high]`` percentile range linearly to ``[b_min, b_max]`` (clipped).

    The percentiles are taken over the whole volume, so every slice of a case gets the same mapping. The
    call returns the scaled image and the record ``{"low", "high", "b_min", "b_max"}`` that
    :func:`invert_intensity` uses to map model values back to the scanner's units.
    """

    def __init__(
        self,
        lower_percentile: float = 0.5,
        upper_percentile: float = 99.5,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
    ) -> None:
        if not 0 <= lower_percentile < upper_percentile <= 100:
            raise ValueError(f"need 0 <= lower < upper <= 100, got {lower_percentile}, {upper_percentile}")
        self.lower_percentile = lower_percentile
        self.upper_percentile = upper_percentile
        self.b_min = b_min
        self.b_max = b_max
        self.clip = clip

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        values = torch.as_tensor(image).detach().flatten().to(torch.float64).numpy()
        low, high = np.percentile(values, [self.lower_percentile, self.upper_percentile])
        if high <= low:
            low, high = float(values.min()), float(values.max())
        if high <= low:
            source = getattr(image, "meta", {}).get("filename_or_obj")
            raise InputError(source, f"constant image (every voxel is {low:g}): nothing to normalise")
        scaled = ScaleIntensityRange(a_min=low, a_max=high, b_min=self.b_min, b_max=self.b_max, clip=self.clip)(image)
        record = {"low": float(low), "high": float(high), "b_min": float(self.b_min), "b_max": float(self.b_max)}
        return scaled, record


def invert_intensity(values: torch.Tensor, record: Mapping[str, float], difference: bool = False) -> torch.Tensor:
    """Map model-range values back to scanner units using a :class:`ScaleIntensityToModel` record.

    With ``difference=True`` the values are differences (no offset), e.g. a model's change to an image.
    """
    scale = (record["high"] - record["low"]) / (record["b_max"] - record["b_min"])
    if difference:
        return values * scale
    return (values - record["b_min"]) * scale + record["low"]


class ScaleIntensityToModeld(MapTransform):
    """Dictionary twin of :class:`ScaleIntensityToModel`; the record goes to ``d[record_key]``."""

    def __init__(
        self,
        keys: KeysCollection,
        lower_percentile: float = 0.5,
        upper_percentile: float = 99.5,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
        record_key: str = "intensity_scaling",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.transform = ScaleIntensityToModel(lower_percentile, upper_percentile, b_min, b_max, clip)
        self.record_key = record_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key], d[self.record_key] = self.transform(d[key])
        return d
