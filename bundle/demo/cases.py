"""One phantom case from (seed, case index): acquisition geometry, anatomy, lesion, image, masks and text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bundle.demo.anatomy import sample_anatomy
from bundle.demo.difficulty import difficulty_settings
from bundle.demo.labels import LESION_CLASSES
from bundle.demo.lesion_text import describe_case
from bundle.demo.lesions import LesionAttributes, sample_incidental_findings, sample_lesion
from bundle.demo.rendering import render_case

AXIS_CODES: tuple[str, str, str] = ("P", "I", "R")


IN_PLANE_SHAPE: tuple[int, int] = (160, 184)


SLICE_COUNTS: tuple[int, ...] = (11, 12, 13)


# Each case's SeedSequence is split into these independent streams, in this order.
_STREAMS = ("acquisition", "anatomy", "lesion", "incidental", "noise", "text")


@dataclass(frozen=True)
class PhantomCase:
    """One generated case; all arrays share the (160, 184, n_slices) grid of ``affine``.

    Attributes:
        image: int16 T1-weighted-like signal (scanner-like units, fat around 1000).
        vertebrae: uint8 vertebra labels (:data:`VERTEBRA_LABELS`, :data:`NEIGHBOUR_BONE_LABELS`, 0 elsewhere).
        lesion: uint8 lesion mask (0/1), empty for a normal case.
        affine: (4, 4) voxel-to-RAS+ millimetre transform, axis codes :data:`AXIS_CODES`.
        attributes: the described level's facts.
        text: radiology-style description built from ``attributes``.
    """

    image: np.ndarray
    vertebrae: np.ndarray
    lesion: np.ndarray
    affine: np.ndarray
    attributes: LesionAttributes
    text: str

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along the three array axes, mm."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def _rotation(angles_rad: Sequence[float]) -> np.ndarray:
    """Rotation about the RAS x, y and z axes (applied in that order), (3, 3)."""
    rx, ry, rz = angles_rad
    about_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    about_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    about_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return about_z @ about_y @ about_x


def _sample_acquisition(
    rng: np.random.Generator,
) -> tuple[tuple[int, int, int], tuple[float, float, float], np.ndarray, float]:
    """(shape, spacing in mm, (4, 4) affine, scanner intensity scale) of one sagittal series."""
    shape = (*IN_PLANE_SHAPE, int(SLICE_COUNTS[rng.integers(len(SLICE_COUNTS))]))
    spacing = (rng.uniform(1.0, 1.08), rng.uniform(1.2, 1.28), rng.uniform(3.5, 4.0))
    # Columns: RAS+ direction of array axes 0, 1, 2 = posterior, inferior, right.
    directions = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    oblique = _rotation(np.deg2rad([rng.uniform(-6, 6), rng.uniform(-3, 3), rng.uniform(-3, 3)]))
    linear = oblique @ directions @ np.diag(spacing)
    volume_center_ras = np.array([rng.uniform(-15, 15), rng.uniform(-70, -30), rng.uniform(-60, 20)])
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = volume_center_ras - linear @ ((np.array(shape) - 1) / 2)
    return shape, spacing, affine, rng.uniform(800, 1200)


def generate_case(seed: int, case_index: int, lesion_class: str, difficulty: float = 0.5) -> PhantomCase:
    """Generate one case; the same arguments always give the same arrays and text.

    Args:
        seed: non-negative integer, the data set's seed.
        case_index: non-negative integer; case k depends only on (seed, k, lesion_class, difficulty).
        lesion_class: "normal", "benign" or "malignant".
        difficulty: in [0, 1]; see :class:`DifficultySettings`.

    Returns:
        The case on a (160, 184, 11..13) grid; see :class:`PhantomCase`.
    """
    settings = difficulty_settings(difficulty)
    for name, value in (("seed", seed), ("case_index", case_index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if lesion_class not in LESION_CLASSES:
        raise ValueError(f"lesion_class must be one of {sorted(LESION_CLASSES)}, got {lesion_class!r}")
    streams = dict(
        zip(
            _STREAMS,
            (
                np.random.default_rng(child)
                for child in np.random.SeedSequence([int(seed), int(case_index)]).spawn(len(_STREAMS))
            ),
            strict=True,
        )
    )
    shape, spacing, affine, intensity_scale = _sample_acquisition(streams["acquisition"])
    anatomy = sample_anatomy(streams["anatomy"], shape, spacing)
    attributes, lesion, deformation = sample_lesion(streams["lesion"], lesion_class, anatomy, settings)
    incidental = sample_incidental_findings(streams["incidental"], anatomy, attributes.level, settings)
    signal, vertebrae, lesion_mask = render_case(
        anatomy, shape, spacing, lesion, deformation, incidental, settings, streams["noise"]
    )
    image = np.clip(np.rint(signal * intensity_scale), 0, np.iinfo(np.int16).max).astype(np.int16)
    return PhantomCase(
        image=image,
        vertebrae=vertebrae,
        lesion=lesion_mask.astype(np.uint8),
        affine=affine,
        attributes=attributes,
        text=describe_case(attributes.to_json(), streams["text"]),
    )
