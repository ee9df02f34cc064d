"""The lesion label written with a synthetic image (MedDiff-FT's mask erosion, "corrosion"), eroded in millimetres.

A synthetic lesion fades into its host at the mask's edge, so the label of an image-mask pair is the lesion mask
eroded by ``erosion_mm`` (:class:`bundle.transforms.morphology.ErodeMaskMM`: whole voxels per axis from the
spacing, a box structuring element): label voxels are where the synthetic lesion surely is. A label that erodes to
nothing cannot be a segmentation target; :class:`EmptyLabelError` says so, and the pair writer drops the pair and
lists it with that message (``bundle.io.pair_writer``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from bundle.errors import InputError
from bundle.transforms.morphology import ErodeMaskMM


class EmptyLabelError(InputError):
    """A lesion label that is empty, or erodes to nothing: its image-mask pair cannot be written."""


class ErodeLesionLabel(Transform):
    """Erode a binary lesion label by ``erosion_mm`` and refuse a label that is empty afterwards.

    Args:
        erosion_mm: the margin removed, in mm (0: the label as it is, binarised).
        spacing_mm: the spacing per spatial axis in mm; ``None``: read from the ``MetaTensor``'s affine. For a 2-D
            lesion written into one slice of a volume, erode the slice with its in-plane spacing (an erosion across
            slices would remove a one-slice lesion whenever ``erosion_mm`` is at least the slice thickness).
        threshold: values above it are inside the label.

    Input ``(C, H, W)`` or ``(C, X, Y, Z)``; output the same shape, float32 in {0, 1}.
    """

    def __init__(self, erosion_mm: float, spacing_mm: Sequence[float] | None = None, threshold: float = 0.5) -> None:
        self.erode = ErodeMaskMM(erosion_mm, spacing_mm, threshold)

    def __call__(self, label: torch.Tensor, source: str | None = None) -> torch.Tensor:
        """The eroded label; ``source`` (a case id or file) names the label in the error.

        Raises:
            EmptyLabelError: the label is empty, or nothing is left after the erosion.
        """
        voxels = int((torch.as_tensor(label) > self.erode.threshold).sum())
        if voxels == 0:
            raise EmptyLabelError(source, "the lesion label is empty; the pair is dropped")
        eroded = self.erode(label)
        if not torch.as_tensor(eroded).any():
            raise EmptyLabelError(
                source,
                f"the lesion label ({voxels} voxels) erodes to nothing at {self.erode.radius_mm:g} mm; the pair is "
                "dropped (a smaller erosion_mm keeps it)",
            )
        return eroded


class ErodeLesionLabeld(MapTransform):
    """Dictionary twin of :class:`ErodeLesionLabel`: each of ``keys`` eroded in place; the error names
    ``d[source_key]`` (the case id) when it is there.

    Args: ``keys``, ``source_key`` and :class:`ErodeLesionLabel`'s arguments.
    """

    def __init__(
        self,
        keys: KeysCollection,
        erosion_mm: float,
        spacing_mm: Sequence[float] | None = None,
        threshold: float = 0.5,
        source_key: str = "case_id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ErodeLesionLabel(erosion_mm, spacing_mm, threshold)
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = d.get(self.source_key)
            d[key] = self.transform(d[key], source=None if source is None else f"{source} ({key})")
        return d
