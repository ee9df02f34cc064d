"""Procedural sagittal T1-weighted lumbar-spine MRI phantom with at most one vertebral-body lesion per case.

This is the bundle's demo and benchmark data: no patient data, fully determined by ``(seed, case index)``.

Geometry of every case::

    array shape  (160, 184, n_slices), n_slices in {11, 12, 13}   (at most 382,720 voxels)
    axis 0       anterior -> posterior, 1.00-1.08 mm               NIfTI axis code 'P'
    axis 1       superior -> inferior,  1.20-1.28 mm               NIfTI axis code 'I'
    axis 2       left -> right, one sagittal slice per index, 3.5-4.0 mm thick   NIfTI axis code 'R'

The affine adds a random oblique rotation (up to 6 degrees in the sagittal plane, 3 degrees off it) and a
scanner-like origin; qform and sform are both set (code 1, scanner). ``image[:, :, k].T`` displays slice
``k`` the radiological way: anterior on the left, superior at the top.

Anatomy (random per case): T12 (partly), L1-L5, S1 and the upper sacrum on a lordotic curve; vertebral bodies
with a dark cortical rim, concave endplates, a waist and a kidney-shaped cross-section (narrower laterally,
35-48 mm wide), textured fatty marrow; wedge-shaped discs (annulus darker than nucleus, sometimes one
degenerated lower disc); pedicles, laminae, articular pillars and spinous processes; the bony canal with
epidural fat, the CSF-filled thecal sac with the conus medullaris, neural foramina with exiting roots;
psoas, paraspinal muscle with fatty streaks, subcutaneous fat, skin and air; retroperitoneal fat, bowel,
aorta (flow void) and IVC. The image then gets a small in-plane blur, a multiplicative bias field that is
brightest near the posterior (spine) coil, and Rician noise.

Vertebra labels follow TotalSegmentator v2 (:data:`VERTEBRA_LABELS`, plus :data:`NEIGHBOUR_BONE_LABELS` for
the partial T12 and the sacrum below S1). A lesion case has one lesion in the marrow of one L1-L5 vertebral
body; the lesion mask is the voxels where the lesion's weight is at least one half (always inside that body's
marrow, so inside its label). Benign (haemangioma): round/oval, sharp margin, hyperintense, often coarse
vertical striations. Malignant (metastasis / myeloma): irregular, ill-defined margin, hypointense, sometimes
anterior wedge height loss and/or a convex posterior cortical bulge. Normal cases have an empty lesion mask
and a random target level. Incidental findings (small fatty marrow islands, Modic endplate changes) appear
only in vertebrae other than the described level, so the description stays true.

Random streams: each case draws from ``np.random.SeedSequence([seed, case_index])`` split into independent
streams (acquisition, anatomy, lesion, incidental findings, noise, text), so case k is the same whatever the
number of cases, and a normal and a lesion case with the same seed and index share their anatomy.
"""

from __future__ import annotations

import gzip
import os
import tempfile
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import expit

from bundle.demo.lesion_text import describe_case
from bundle.utils.files import write_atomically, write_json_atomically

VERTEBRA_LABELS: dict[str, int] = {"L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "S1": 26}
"""Label values of the vertebra map (TotalSegmentator v2 numbering, as in the real CT fixture)."""
NEIGHBOUR_BONE_LABELS: dict[str, int] = {"T12": 32, "sacrum": 25}
"""Other bones in the vertebra map: the partly visible T12 and the sacrum below S1 (TotalSegmentator v2)."""
LESION_CLASSES: dict[str, int] = {"normal": 0, "benign": 1, "malignant": 2}
LESION_LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")
DEFAULT_CLASS_FRACTIONS: dict[str, float] = {"normal": 0.60, "benign": 0.25, "malignant": 0.15}
AXIS_CODES: tuple[str, str, str] = ("P", "I", "R")
IN_PLANE_SHAPE: tuple[int, int] = (160, 184)
SLICE_COUNTS: tuple[int, ...] = (11, 12, 13)
DATALIST_NAME = "spine_mri_phantom"

_SEGMENT_NAMES = ("T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2", "S3")
_SEGMENT_LABELS = {**VERTEBRA_LABELS, "T12": NEIGHBOUR_BONE_LABELS["T12"],
                   "S2": NEIGHBOUR_BONE_LABELS["sacrum"], "S3": NEIGHBOUR_BONE_LABELS["sacrum"]}
_S1_INDEX = _SEGMENT_NAMES.index("S1")
_CORTEX_THICKNESS_MM = 1.6
_CANAL_GAP_MM = 1.5  # posterior longitudinal ligament between the body's back wall and the canal
_MARROW_INSET_MM = 2.5  # lesions keep this far from the outer body surface (cortex plus endplate concavity)
# Each case's SeedSequence is split into these independent streams, in this order.
_STREAMS = ("acquisition", "anatomy", "lesion", "incidental", "noise", "text")
_CLASS_STREAM = 1  # stream ids of the dataset-level draws (class sequence, split)
_SPLIT_STREAM = 2


# ---------------------------------------------------------------------------------------------------------
# Difficulty
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DifficultySettings:
    """What the ``difficulty`` knob (0 = easy, 1 = hard) sets; signals are relative to fat = 1.

    Attributes:
        lesion_diameter_mm: range of the sampled lesion diameter, mm (12-22 at 0, 8.5-16 at 0.5, 5-10 at 1),
            then capped so the lesion fits inside the vertebral body's marrow.
        lesion_contrast: range of the peak relative change of marrow signal in the lesion
            (0.40-0.65 at 0, 0.225-0.395 at 0.5, 0.05-0.14 at 1).
        noise_sigma: Rician noise standard deviation relative to fat (0.010 at 0, 0.040 at 0.5, 0.070 at 1).
        bias_amplitude: log-amplitude of the multiplicative bias field (0.10, 0.275, 0.45).
        marrow_texture: standard deviation of the multiplicative marrow texture, half fine (0.8 mm) and half
            patchy (4 mm) (0.04, 0.12, 0.20).
        incidental_findings_mean: mean number of fatty marrow islands and Modic endplate changes per case,
            placed outside the described level (0.2, 2.1, 4.0); they mimic small lesions.
        height_loss_probability: chance that a malignant lesion comes with an anterior wedge (0.6, 0.45, 0.3).
        height_loss_fraction: range of the anterior height lost (0.20-0.45 at 0, 0.15-0.35 at 0.5,
            0.10-0.25 at 1).
    """

    lesion_diameter_mm: tuple[float, float]
    lesion_contrast: tuple[float, float]
    noise_sigma: float
    bias_amplitude: float
    marrow_texture: float
    incidental_findings_mean: float
    height_loss_probability: float
    height_loss_fraction: tuple[float, float]


def difficulty_settings(difficulty: float) -> DifficultySettings:
    """Linear interpolation of every setting between its easy (0) and hard (1) value; see the class.

    Raises:
        ValueError: if ``difficulty`` is not a number in [0, 1].
    """
    if isinstance(difficulty, bool) or not isinstance(difficulty, (int, float)) or not 0 <= difficulty <= 1:
        raise ValueError(f"difficulty must be a number in [0, 1], got {difficulty!r}")

    def between(easy: float, hard: float) -> float:
        return easy + (hard - easy) * float(difficulty)

    return DifficultySettings(
        lesion_diameter_mm=(between(12.0, 5.0), between(22.0, 10.0)),
        lesion_contrast=(between(0.40, 0.05), between(0.65, 0.14)),
        noise_sigma=between(0.010, 0.070),
        bias_amplitude=between(0.10, 0.45),
        marrow_texture=between(0.04, 0.20),
        incidental_findings_mean=between(0.2, 4.0),
        height_loss_probability=between(0.6, 0.3),
        height_loss_fraction=(between(0.20, 0.10), between(0.45, 0.25)),
    )


# ---------------------------------------------------------------------------------------------------------
# Case description
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LesionAttributes:
    """The facts of one case's described vertebral level (all JSON-safe).

    Attributes:
        lesion_class: "normal", "benign" or "malignant".
        level: "L1" ... "L5": the lesion's vertebra, or for a normal case the target level for insertion.
        diagnosis: "haemangioma" (benign), "metastasis" or "myeloma" (malignant); None when normal.
        position_ap: "anterior", "central" or "posterior" part of the body; None when normal.
        position_si: "superior", "mid" or "inferior" part of the body; None when normal.
        size_mm: largest lesion diameter, whole mm (0 when normal).
        signal: "hyperintense", "hypointense" or "normal" (T1).
        contrast: peak relative change of marrow signal in the lesion (0.3 = 30 %), 0 when normal.
        margin: "well-defined" or "ill-defined"; None when normal.
        striations: coarse vertical trabecular striations (benign only).
        deformation: "none" or "height loss".
        height_loss_percent: anterior height lost by the vertebral body (anterior wedge), percent.
        posterior_bulge: convex bulge of the posterior cortex towards the canal.
        center_offset_mm: lesion centre minus body centre in the vertebra's own frame
            (posterior, inferior, right), mm; None when normal.
        radii_mm: lesion semi-axes (anterior-posterior, superior-inferior, left-right), mm; None when normal.
    """

    lesion_class: str
    level: str
    diagnosis: str | None = None
    position_ap: str | None = None
    position_si: str | None = None
    size_mm: int = 0
    signal: str = "normal"
    contrast: float = 0.0
    margin: str | None = None
    striations: bool = False
    deformation: str = "none"
    height_loss_percent: int = 0
    posterior_bulge: bool = False
    center_offset_mm: tuple[float, float, float] | None = None
    radii_mm: tuple[float, float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain dict (tuples become lists) for the datalist."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


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


# ---------------------------------------------------------------------------------------------------------
# Anatomy
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Segment:
    """One vertebra (or sacral segment), placed in the in-plane grid frame.

    The grid frame is millimetres from the first voxel's centre: x along array axis 0 (posterior), y along
    axis 1 (inferior), z along axis 2 (right) measured from the spine's midline. ``tilt_rad`` is the angle of
    the body's inferior axis from +y, positive towards posterior; its local frame is p (posterior), q
    (inferior), r = z.
    """

    name: str
    label: int
    center_xy_mm: tuple[float, float]
    tilt_rad: float
    half_depth_mm: float
    half_width_mm: float
    height_mm: float
    marrow_signal: float
    spinous_length_mm: float

    def local_frame(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(p, q): posterior and inferior coordinates, mm, of grid points (x, y) relative to the body centre."""
        dx, dy = x - self.center_xy_mm[0], y - self.center_xy_mm[1]
        sin, cos = np.sin(self.tilt_rad), np.cos(self.tilt_rad)
        return dx * cos - dy * sin, dx * sin + dy * cos

    def to_grid(self, p: float, q: float) -> np.ndarray:
        """Grid (x, y), mm, of the local point (p, q)."""
        return _local_to_grid(np.array(self.center_xy_mm), self.tilt_rad, p, q)


def _local_to_grid(center_xy_mm: np.ndarray, tilt_rad: float, p: float, q: float) -> np.ndarray:
    """Grid (x, y), mm, of the point (p posterior, q inferior) of a frame centred at ``center_xy_mm`` whose
    inferior axis is tilted by ``tilt_rad`` towards posterior."""
    sin, cos = np.sin(tilt_rad), np.cos(tilt_rad)
    return np.array([center_xy_mm[0] + p * cos + q * sin, center_xy_mm[1] - p * sin + q * cos])


@dataclass(frozen=True)
class _Deformation:
    """Shape change of the lesion's vertebral body (malignant cases); lengths in mm."""

    height_loss_fraction: float = 0.0
    bulge_mm: float = 0.0
    bulge_center_qr_mm: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class _Anatomy:
    """Everything random about one case's anatomy; lengths in mm, signals relative to fat = 1."""

    segments: tuple[_Segment, ...]
    segment_arc_mm: np.ndarray  # (9,) arc length of each segment centre along the centreline
    disc_heights_mm: np.ndarray  # (8,) between consecutive segments
    disc_nucleus_signal: np.ndarray  # (8,)
    centerline_arc_mm: np.ndarray  # (n,) dense arc-length samples
    centerline_xy_mm: np.ndarray  # (n, 2) grid (x, y) of the samples
    centerline_tilt_rad: np.ndarray  # (n,)
    skin_x_mm: np.ndarray  # (n_rows,) posterior skin surface x for each row (array axis 1)
    canal_depth_mm: float
    canal_half_width_mm: float
    lamina_thickness_mm: float
    spinous_half_width_mm: float
    spinous_height_mm: float
    pedicle_height_mm: float
    pedicle_width_mm: float
    fat_thickness_mm: float
    retroperitoneal_fat_mm: float
    aorta_radius_mm: float
    aorta_z_mm: float
    ivc_z_mm: float
    conus_end_arc_mm: float
    midline_z_mm: float
    signals: dict[str, float]


def _tilt_profile(arc_mm: np.ndarray, s1_arc_mm: float, top_tilt: float, s1_tilt: float, exponent: float,
                  sacral_bend: float) -> np.ndarray:
    """Tilt (rad) along the spine, a function of arc length relative to the S1 centre's (so it scales with
    the anatomy): lordosis growing from ``top_tilt`` (T12 top) to ``s1_tilt``, then the sacrum bending back
    anteriorly by ``sacral_bend`` per quarter of that length."""
    fraction = np.clip(arc_mm / s1_arc_mm, 0.0, None)
    lordosis = top_tilt + (s1_tilt - top_tilt) * np.minimum(fraction, 1.0) ** exponent
    return lordosis - sacral_bend * np.clip(fraction - 1.0, 0.0, None) / 0.25


def _sample_anatomy(rng: np.random.Generator, shape: tuple[int, int, int],
                    spacing: tuple[float, float, float]) -> _Anatomy:
    """Random anatomy that fits the field of view (scaled down when a large spine would not fit)."""
    count = len(_SEGMENT_NAMES)
    heights = rng.uniform(23.5, 27.5) + np.array([-1.5, 0, 0.6, 1.0, 1.0, 0.4, 2.0, -4.0, -8.0])
    heights += rng.normal(0.0, 0.6, count)
    half_depths = rng.uniform(15.5, 18.5) + np.array([-0.8, 0, 0.4, 0.8, 1.1, 1.3, 1.0, -2.5, -5.5])
    half_depths += rng.normal(0.0, 0.3, count)
    # The sacral segments are wide: their "bodies" include the alae.
    half_widths = rng.uniform(17.5, 21.5) + np.array([-1.0, 0, 0.6, 1.2, 1.8, 2.2, 20.0, 12.0, 2.0])
    half_widths += rng.normal(0.0, 0.4, count)
    discs = rng.uniform([5.5, 6.5, 7.5, 8.0, 8.5, 7.5, 1.2, 1.0], [7.5, 8.5, 9.5, 10.5, 11.0, 10.5, 2.0, 1.6])
    nucleus = np.ones(count - 1)
    if rng.random() < 0.35:  # one degenerated lower disc: thinner, darker nucleus
        degenerated = int(rng.choice([4, 5]))
        discs[degenerated] *= rng.uniform(0.5, 0.7)
        nucleus[degenerated] = rng.uniform(0.75, 0.9)
    # Tilt -24..-14 degrees at T12 growing to 30..45 at S1: the lordosis apex falls around L2-L4.
    top_tilt, s1_tilt = np.deg2rad(rng.uniform(-24, -14)), np.deg2rad(rng.uniform(30, 45))
    exponent, sacral_bend = rng.uniform(1.0, 1.5), np.deg2rad(rng.uniform(10, 25))
    canal_depth, canal_half_width = rng.uniform(13, 17), rng.uniform(10.5, 12.5)
    lamina_thickness, spinous_length = rng.uniform(5, 7), rng.uniform(26, 34)
    fat_thickness = rng.uniform(6, 24)
    cover = rng.uniform(3, 10) + fat_thickness + 2.0  # muscle behind the spinous tips, fat, skin
    size_factor = rng.uniform(0.94, 1.06)

    def arc_positions(disc_heights: np.ndarray) -> np.ndarray:
        gaps = heights[:-1] / 2 + disc_heights + heights[1:] / 2
        return heights[0] / 2 + np.concatenate([[0.0], np.cumsum(gaps)])

    # Wedge discs: keep at least 3 mm of disc posteriorly where the tilt changes between two lumbar bodies.
    arcs = arc_positions(discs)
    for _ in range(2):
        tilts = _tilt_profile(arcs, arcs[_S1_INDEX], top_tilt, s1_tilt, exponent, sacral_bend)
        needed = 0.5 * (half_depths[:-1] + half_depths[1:]) * np.diff(tilts) + 3.0
        discs[: _S1_INDEX] = np.maximum(discs[: _S1_INDEX], needed[: _S1_INDEX])
        arcs = arc_positions(discs)

    arc_step = 0.5
    dense_arc = np.arange(-200.0, arcs[-1] + 200.0, arc_step)
    dense_tilt = _tilt_profile(dense_arc, arcs[_S1_INDEX], top_tilt, s1_tilt, exponent, sacral_bend)
    dense_xy = np.cumsum(np.stack([np.sin(dense_tilt), np.cos(dense_tilt)], axis=1) * arc_step, axis=0)
    dense_xy -= np.array([np.interp(0.0, dense_arc, dense_xy[:, i]) for i in range(2)])
    centers = np.stack([np.interp(arcs, dense_arc, dense_xy[:, i]) for i in range(2)], axis=1)
    tilts = _tilt_profile(arcs, arcs[_S1_INDEX], top_tilt, s1_tilt, exponent, sacral_bend)

    def corners(index: int, q_sign: float) -> np.ndarray:
        """(2, 2) grid (x, y) of the anterior and posterior corners of one endplate (q_sign -1: superior)."""
        return np.array([_local_to_grid(centers[index], tilts[index], p, q_sign * heights[index] / 2)
                         for p in (-half_depths[index], half_depths[index])])

    # Fit L1's top, S1's bottom, the lumbar bodies' front and the skin behind the L1-S1 spinous tips.
    spinous_lengths = np.where(np.arange(count) >= _S1_INDEX, 0.4, 1.0) * spinous_length
    tip_p = half_depths + _CANAL_GAP_MM + canal_depth + 0.5 * lamina_thickness + spinous_lengths
    tips = np.array([_local_to_grid(centers[i], tilts[i], tip_p[i], 0.3 * spinous_lengths[i] - 0.05 * heights[i])
                     for i in range(count)])
    top = min(corners(1, -1)[:, 1])
    bottom = max(corners(_S1_INDEX, 1)[:, 1])
    anterior = min(min(corners(i, s)[:, 0]) for i in range(1, _S1_INDEX + 1) for s in (-1, 1))
    posterior = max(tips[1: _S1_INDEX + 1, 0]) + cover
    fov_x, fov_y = shape[0] * spacing[0], shape[1] * spacing[1]
    top_margin, bottom_margin = discs[0] + 3.0, 4.0
    anterior_margin, air_margin = 10.0, 3.0
    scale = min(size_factor, (fov_y - top_margin - bottom_margin) / (bottom - top),
                (fov_x - anterior_margin - air_margin) / (posterior - anterior))
    free_y = max(0.0, fov_y - top_margin - bottom_margin - scale * (bottom - top))
    free_x = max(0.0, fov_x - anterior_margin - air_margin - scale * (posterior - anterior))
    shift_y = top_margin + rng.uniform(0.0, free_y) - scale * top
    air_gap = air_margin + rng.uniform(0.0, min(free_x, 6.0))
    shift_x = fov_x - air_gap - scale * posterior
    shift = np.array([shift_x, shift_y])

    centers = scale * centers + shift
    tips = scale * tips + shift
    rows_y = np.arange(shape[1]) * spacing[1]
    order = np.argsort(tips[:, 1])
    skin_x = np.interp(rows_y, tips[order, 1], tips[order, 0] + scale * cover)
    skin_x = ndimage.gaussian_filter1d(skin_x, sigma=15.0 / spacing[1], mode="nearest")

    marrow = rng.uniform(0.60, 0.78) * rng.uniform(0.96, 1.04, count)
    segments = tuple(
        _Segment(name=name, label=_SEGMENT_LABELS[name], center_xy_mm=(float(centers[i, 0]), float(centers[i, 1])),
                 tilt_rad=float(tilts[i]), half_depth_mm=float(scale * half_depths[i]),
                 half_width_mm=float(scale * half_widths[i]), height_mm=float(scale * heights[i]),
                 marrow_signal=float(marrow[i]), spinous_length_mm=float(scale * spinous_lengths[i]))
        for i, name in enumerate(_SEGMENT_NAMES))
    signals = {
        "fat": 1.0, "muscle": rng.uniform(0.28, 0.36), "disc": rng.uniform(0.28, 0.34),
        "nucleus": rng.uniform(0.36, 0.44), "csf": rng.uniform(0.10, 0.16), "cord": rng.uniform(0.38, 0.46),
        "cortex": 0.07, "bowel": rng.uniform(0.38, 0.5), "skin": 0.55, "flow_void": 0.04,
        "ivc": rng.uniform(0.15, 0.25), "gas": 0.02, "nerve_root": rng.uniform(0.3, 0.4),
    }
    conus_segment = int(rng.choice([1, 2]))  # conus ends at L1 or L2
    return _Anatomy(
        segments=segments,
        segment_arc_mm=scale * arcs,
        disc_heights_mm=scale * discs,
        disc_nucleus_signal=nucleus,
        centerline_arc_mm=scale * dense_arc,
        centerline_xy_mm=scale * dense_xy + shift,
        centerline_tilt_rad=dense_tilt,
        skin_x_mm=skin_x,
        canal_depth_mm=scale * canal_depth,
        canal_half_width_mm=scale * canal_half_width,
        lamina_thickness_mm=scale * lamina_thickness,
        spinous_half_width_mm=scale * rng.uniform(3.5, 5.0),
        spinous_height_mm=scale * rng.uniform(11, 15),
        pedicle_height_mm=scale * rng.uniform(12, 15),
        pedicle_width_mm=scale * rng.uniform(6.5, 8.5),
        fat_thickness_mm=scale * fat_thickness,
        retroperitoneal_fat_mm=rng.uniform(5, 14),
        aorta_radius_mm=rng.uniform(8.5, 11),
        aorta_z_mm=-rng.uniform(5, 12),
        ivc_z_mm=rng.uniform(13, 19),
        conus_end_arc_mm=scale * (arcs[conus_segment] + rng.uniform(-0.3, 0.5) * heights[conus_segment]),
        midline_z_mm=rng.uniform(-2.5, 2.5),
        signals=signals,
    )


def _superior_endplate_q(p: np.ndarray | float, segment: _Segment,
                         height_loss_fraction: float) -> np.ndarray | float:
    """Local q (mm) of the superior endplate at posterior coordinate p: -h/2, pushed down anteriorly by a wedge.

    The loss is ``height_loss_fraction`` of the height at the anterior wall (p = -a) and none at the back.
    """
    a, h = segment.half_depth_mm, segment.height_mm
    return -h / 2 + height_loss_fraction * h * np.clip((a - p) / (2 * a), 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Lesion and incidental findings
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _MarrowChange:
    """A smooth-edged ellipsoid that changes the marrow signal of one vertebral body; vertebra frame, mm.

    ``relative_change`` multiplies the marrow signal by (1 + change * weight), weight in [0, 1] falling from 1
    inside to 0 outside over ``edge_width_mm``; ``irregularity`` (0 = ellipsoid) roughens the outline with
    smooth noise. Striations (``striation_depth`` > 0) are thin vertical lines ``striation_period_mm`` apart,
    running along q, at angle ``striation_angle_rad`` in the p-r plane, where the change is reduced by that
    fraction (trabeculae of normal signal inside a bright lesion): the lesion stays brighter on average.
    """

    segment_index: int
    center_pqr_mm: tuple[float, float, float]
    radii_pqr_mm: tuple[float, float, float]
    relative_change: float
    edge_width_mm: float
    irregularity: float = 0.0
    striation_depth: float = 0.0
    striation_period_mm: float = 3.0
    striation_angle_rad: float = 0.0


def _sample_lesion(rng: np.random.Generator, lesion_class: str, anatomy: _Anatomy,
                   settings: DifficultySettings) -> tuple[LesionAttributes, _MarrowChange | None, _Deformation]:
    """The described level, and for a lesion class the lesion and its body's deformation.

    The level is drawn first for every class, so a normal and a lesion case of the same seed and index share
    their level. The lesion is sized and placed to fit inside the (deformed) body's marrow; its position words
    are read from where it ended up.
    """
    level = LESION_LEVELS[rng.integers(len(LESION_LEVELS))]
    if lesion_class == "normal":
        return LesionAttributes(lesion_class="normal", level=level), None, _Deformation()
    benign = lesion_class == "benign"
    segment_index = _SEGMENT_NAMES.index(level)
    segment = anatomy.segments[segment_index]
    a, b, h = segment.half_depth_mm, segment.half_width_mm, segment.height_mm
    contrast = rng.uniform(*settings.lesion_contrast)
    low, high = settings.lesion_diameter_mm
    radius = rng.integers(round(low), round(high) + 1) / 2
    elongation = rng.uniform(0.8, 1.0, size=2)
    # Haemangiomas tend to be vertically oval; metastases are widest anteroposteriorly.
    radii = np.array([radius * elongation[0], radius, radius * elongation[1]] if benign
                     else [radius, radius * elongation[0], radius * elongation[1]])
    height_loss = 0.0
    if not benign and rng.random() < settings.height_loss_probability:
        height_loss = rng.uniform(*settings.height_loss_fraction)

    inner_half_depth = a - _MARROW_INSET_MM
    radii[0] = min(radii[0], inner_half_depth - 0.5)
    room = inner_half_depth - radii[0]
    direction = rng.integers(-1, 2)  # anterior, central, posterior
    p0 = direction * rng.uniform(0.6, 1.0) * room if direction else rng.uniform(-0.2, 0.2) * room
    top = float(_superior_endplate_q(p0 - radii[0], segment, height_loss)) + _MARROW_INSET_MM
    bottom = h / 2 - _MARROW_INSET_MM
    radii[1] = min(radii[1], (bottom - top) / 2 - 0.5)
    room = (bottom - top) / 2 - radii[1]
    direction = rng.integers(-1, 2)  # superior, mid, inferior
    q0 = (top + bottom) / 2 + (direction * rng.uniform(0.6, 1.0) if direction else rng.uniform(-0.2, 0.2)) * room
    radii[2] = min(radii[2], b - _MARROW_INSET_MM - 2.0)
    r0 = rng.uniform(-1.0, 1.0) * max(0.0, min(0.25 * b, b - _MARROW_INSET_MM - radii[2]))

    # Position words: anterior/posterior when the centre is more than a fifth of the half depth in front of or
    # behind the body's middle; superior/inferior when it is more than 12 % of the local body height above or
    # below it.
    body_top = float(_superior_endplate_q(p0, segment, height_loss))
    relative_q = (q0 - (body_top + h / 2) / 2) / (h / 2 - body_top)
    position_ap = "anterior" if p0 < -0.2 * a else "posterior" if p0 > 0.2 * a else "central"
    position_si = "superior" if relative_q < -0.12 else "inferior" if relative_q > 0.12 else "mid"
    posterior_bulge = not benign and position_ap == "posterior" and rng.random() < 0.5
    bulge_mm = rng.uniform(2.0, 4.0) if posterior_bulge else 0.0
    striated = benign and rng.random() < 0.6
    lesion = _MarrowChange(
        segment_index=segment_index,
        center_pqr_mm=(float(p0), float(q0), float(r0)),
        radii_pqr_mm=(float(radii[0]), float(radii[1]), float(radii[2])),
        relative_change=contrast if benign else -contrast,
        edge_width_mm=0.35 if benign else rng.uniform(1.0, 2.2),
        irregularity=0.0 if benign else rng.uniform(0.15, 0.3),
        striation_depth=rng.uniform(0.6, 0.9) if striated else 0.0,
        striation_period_mm=rng.uniform(2.6, 3.6),
        striation_angle_rad=rng.uniform(0.0, np.pi),
    )
    diagnosis = "haemangioma" if benign else "metastasis" if rng.random() < 0.7 else "myeloma"
    attributes = LesionAttributes(
        lesion_class=lesion_class,
        level=level,
        diagnosis=diagnosis,
        position_ap=position_ap,
        position_si=position_si,
        size_mm=round(float(2 * radii.max())),
        signal="hyperintense" if benign else "hypointense",
        contrast=round(float(contrast), 3),
        margin="well-defined" if benign else "ill-defined",
        striations=striated,
        deformation="height loss" if height_loss > 0 else "none",
        height_loss_percent=round(100 * float(height_loss)),
        posterior_bulge=posterior_bulge,
        center_offset_mm=tuple(round(float(v), 1) for v in (p0, q0, r0)),
        radii_mm=tuple(round(float(v), 1) for v in radii),
    )
    deformation = _Deformation(height_loss_fraction=height_loss, bulge_mm=bulge_mm,
                               bulge_center_qr_mm=(float(q0), float(r0)))
    return attributes, lesion, deformation


def _sample_incidental_findings(rng: np.random.Generator, anatomy: _Anatomy, described_level: str,
                                settings: DifficultySettings) -> list[_MarrowChange]:
    """Fatty marrow islands (small, bright, sharp) and Modic endplate changes (bright or dark bands).

    They go into T12-S1 bodies other than ``described_level``, so that level's description stays true.
    """
    candidates = [i for i, name in enumerate(_SEGMENT_NAMES[: _S1_INDEX + 1]) if name != described_level]
    findings = []
    for _ in range(rng.poisson(settings.incidental_findings_mean)):
        index = candidates[rng.integers(len(candidates))]
        segment = anatomy.segments[index]
        a, b, h = segment.half_depth_mm, segment.half_width_mm, segment.height_mm
        if rng.random() < 0.6:
            center = (rng.uniform(-0.6, 0.6) * a, rng.uniform(-0.3, 0.3) * h, rng.uniform(-0.4, 0.4) * b)
            radii = tuple(rng.uniform(1.5, 3.5, size=3))
            change, edge = rng.uniform(0.3, 0.6), 0.4
        else:
            endplate = rng.choice([-1.0, 1.0])
            center = (rng.uniform(-0.5, 0.3) * a, endplate * (h / 2 - rng.uniform(2.0, 4.0)), 0.0)
            radii = (rng.uniform(0.5, 0.8) * a, rng.uniform(2.0, 4.0), rng.uniform(0.5, 0.8) * b)
            change, edge = rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.45), 1.0
        findings.append(_MarrowChange(segment_index=index, center_pqr_mm=tuple(float(v) for v in center),
                                      radii_pqr_mm=tuple(float(v) for v in radii),
                                      relative_change=float(change), edge_width_mm=edge))
    return findings


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                  sigma_mm: tuple[float, float, float]) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation, float32 of ``shape``."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32),
                                    sigma=[s / d for s, d in zip(sigma_mm, spacing)], mode="reflect")
    return noise / noise.std()


def _curve_coordinates(anatomy: _Anatomy, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(arc, nu), mm, of in-plane grid points: arc length of the nearest centreline point, and the offset
    from it along the spine's posterior normal."""
    tree = cKDTree(anatomy.centerline_xy_mm)
    _, nearest = tree.query(np.stack([x.ravel(), y.ravel()], axis=1))
    nearest = nearest.reshape(x.shape)
    tilt = anatomy.centerline_tilt_rad[nearest]
    dx = x - anatomy.centerline_xy_mm[nearest, 0]
    dy = y - anatomy.centerline_xy_mm[nearest, 1]
    return anatomy.centerline_arc_mm[nearest], dx * np.cos(tilt) - dy * np.sin(tilt)


def _inside_ellipse(u: np.ndarray, u_radius: np.ndarray | float, v: np.ndarray,
                    v_radius: np.ndarray | float) -> np.ndarray:
    """Whether offsets (u, v) from an ellipse's centre lie inside it (radii in the same unit, mm)."""
    return (u / u_radius) ** 2 + (v / v_radius) ** 2 <= 1.0


def _paint_soft_tissue(anatomy: _Anatomy, x: np.ndarray, z: np.ndarray, arc: np.ndarray, nu: np.ndarray,
                       half_depth: np.ndarray, half_width: np.ndarray,
                       fields: Mapping[str, np.ndarray]) -> np.ndarray:
    """Air, skin, subcutaneous fat, muscle with fatty streaks, psoas, retroperitoneal fat, bowel and vessels."""
    signal, fine, coarse = anatomy.signals, fields["fine"], fields["coarse"]
    arcs = anatomy.segment_arc_mm
    depth_below_skin = (anatomy.skin_x_mm[None, :] - x)[..., None]
    trunk = depth_below_skin >= 0
    image = np.where(trunk, signal["muscle"] * (1 + 0.06 * coarse), 0.0)
    posterior = (nu > half_depth + 2)[..., None]
    fatty_streak = np.clip((fields["streaks"] - 1.4) / 0.6, 0.0, 1.0) * (trunk & posterior)
    image = image + fatty_streak * (0.85 * signal["fat"] - image)

    anterior = (nu < -half_depth - 1)[..., None]
    retroperitoneal = (nu > -half_depth - 1 - anatomy.retroperitoneal_fat_mm)[..., None]
    abdomen = np.where(coarse > 0.3, signal["fat"] * (0.92 + 0.04 * fine), signal["bowel"] * (1 + 0.12 * fine))
    abdomen = np.where(coarse < -2.2, signal["gas"], abdomen)
    fat = signal["fat"] * (0.95 + 0.03 * fine)
    image = np.where(trunk & anterior, np.where(retroperitoneal, fat, abdomen), image)

    growth = np.clip((arc - arcs[1]) / (arcs[5] - arcs[1]), 0.0, 1.0)[..., None]
    psoas_levels = ((arc > arcs[1] - 10) & (arc < arcs[_S1_INDEX]))[..., None]
    psoas = psoas_levels & _inside_ellipse(
        (nu + 0.35 * half_depth)[..., None], 6 + 10 * growth,
        np.abs(z) - (half_width[..., None] + 2 + 8 * growth), 5 + 8 * growth)
    image = np.where(psoas, signal["muscle"] * (1 + 0.05 * coarse), image)

    radius = anatomy.aorta_radius_mm
    aorta = (arc < arcs[4])[..., None] & _inside_ellipse((nu + half_depth + 2 + radius)[..., None], radius,
                                                         z - anatomy.aorta_z_mm, radius)
    image = np.where(aorta, signal["flow_void"], image)
    ivc_radius = 1.1 * radius
    ivc = (arc < arcs[5])[..., None] & _inside_ellipse((nu + half_depth + 2 + 0.65 * ivc_radius)[..., None],
                                                       0.65 * ivc_radius, z - anatomy.ivc_z_mm, ivc_radius)
    image = np.where(ivc, signal["ivc"], image)

    image = np.where(trunk & (depth_below_skin < anatomy.fat_thickness_mm), fat, image)
    return np.where(trunk & (depth_below_skin < 2.0), signal["skin"], image)


def _paint_canal(image: np.ndarray, anatomy: _Anatomy, z: np.ndarray, arc: np.ndarray, nu: np.ndarray,
                 half_depth: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Epidural fat, neural foramina with exiting roots, the thecal sac (to S2) and the conus medullaris."""
    signal = anatomy.signals
    depth, half_width = anatomy.canal_depth_mm, anatomy.canal_half_width_mm
    front = half_depth + _CANAL_GAP_MM
    abs_z = np.abs(z)
    bony_canal = ((nu >= front) & (nu <= front + depth))[..., None] & (abs_z <= half_width)
    image = np.where(bony_canal, signal["fat"] * 0.95, image)
    lateral = (abs_z > half_width) & (abs_z <= half_width + anatomy.pedicle_width_mm - 1)
    foramina = ((nu >= half_depth - 1) & (nu <= front + depth - 1))[..., None] & lateral
    image = np.where(foramina, signal["fat"] * 0.92, image)
    for segment, segment_arc in zip(anatomy.segments[:_S1_INDEX], anatomy.segment_arc_mm):
        root = _inside_ellipse(arc - (segment_arc + 0.2 * segment.height_mm), 2.8, nu - (front + 0.35 * depth), 2.8)
        image = np.where(root[..., None] & (abs_z > half_width - 2) & lateral,
                         signal["nerve_root"], image)
    sac_center = front + 0.45 * depth
    sac = (arc <= anatomy.segment_arc_mm[7])[..., None] & _inside_ellipse(
        (nu - sac_center)[..., None], 0.45 * depth, z, half_width - 1)
    image = np.where(sac, signal["csf"] * (1 + 0.04 * fine), image)
    taper = np.sqrt(np.clip((anatomy.conus_end_arc_mm - arc) / 25.0, 0.0, 1.0))[..., None]
    cord = (taper > 0) & _inside_ellipse((nu - sac_center + 1)[..., None], 3.8 * taper + 1e-6, z,
                                         4.5 * taper + 1e-6)
    return np.where(cord, signal["cord"], image)


def _paint_discs(image: np.ndarray, anatomy: _Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                 target_index: int | None, deformation: _Deformation, fine: np.ndarray) -> np.ndarray:
    """Discs between consecutive segments: wedge-shaped between the endplates, nucleus brighter than annulus."""
    signal = anatomy.signals
    for i, (upper, lower) in enumerate(zip(anatomy.segments[:-1], anatomy.segments[1:])):
        _, q_upper = upper.local_frame(x, y)
        p_lower, q_lower = lower.local_frame(x, y)
        loss = deformation.height_loss_fraction if i + 1 == target_index else 0.0
        between = (q_upper >= upper.height_mm / 2 - 1.5) & (
            q_lower <= _superior_endplate_q(p_lower, lower, loss) + 1.5)
        tilt = (upper.tilt_rad + lower.tilt_rad) / 2
        center = (upper.to_grid(0.0, upper.height_mm / 2) + lower.to_grid(0.0, -lower.height_mm / 2)) / 2
        p_disc = (x - center[0]) * np.cos(tilt) - (y - center[1]) * np.sin(tilt)
        half_depth = (upper.half_depth_mm + lower.half_depth_mm) / 2 + 1.0
        half_width = min(upper.half_width_mm, lower.half_width_mm) + 0.5
        rho = ((np.abs(p_disc) / half_depth)[..., None] ** 2.5 + (np.abs(z) / half_width) ** 2.5) ** 0.4
        disc = between[..., None] & (rho <= 1.0)
        nucleus = signal["nucleus"] * anatomy.disc_nucleus_signal[i]
        value = signal["disc"] + (nucleus - signal["disc"]) * np.clip((0.75 - rho) / 0.3, 0.0, 1.0)
        image = np.where(disc, value * (1 + 0.03 * fine), image)
    return image


def _body_mask(p: np.ndarray, q: np.ndarray, z: np.ndarray, segment: _Segment,
               deformation: _Deformation) -> np.ndarray:
    """Vertebral body (bool, in-plane shape of p plus z): rounded edges, waist, concave endplates, kidney-shaped
    cross-section, optional anterior wedge and posterior bulge."""
    a, b, h = segment.half_depth_mm, segment.half_width_mm, segment.height_mm
    top = _superior_endplate_q(p, segment, deformation.height_loss_fraction)
    middle, half_height = (top + h / 2) / 2, (h / 2 - top) / 2
    t = (q - middle) / half_height
    waist = (1 - 0.07 * (1 - np.clip(t * t, 0.0, 1.0)))[..., None]
    p3, q3 = p[..., None], q[..., None]
    back = p3 > 0
    p_shaped = p3 - back * 0.15 * a * (z / b) ** 2
    if deformation.bulge_mm > 0:
        q0, r0 = deformation.bulge_center_qr_mm
        p_shaped = p_shaped - back * deformation.bulge_mm * np.exp(-((q3 - q0) ** 2 + (z - r0) ** 2) / (2 * 7.0 ** 2))
    rho = ((np.abs(p_shaped) / (a * waist)) ** 2.6 + (np.abs(z) / (b * waist)) ** 2.6) ** (1 / 2.6)
    vertical = np.abs(t)[..., None] + 1.2 * np.clip(1 - rho ** 2, 0.0, None) / half_height[..., None]
    return rho ** 6 + vertical ** 6 <= 1.0


def _posterior_elements_mask(p: np.ndarray, q: np.ndarray, z: np.ndarray, segment: _Segment, anatomy: _Anatomy,
                             gap_above_mm: float, gap_below_mm: float) -> np.ndarray:
    """Pedicles, laminae, spinous process and articular pillars (bool, in-plane shape of p plus z)."""
    a, h = segment.half_depth_mm, segment.height_mm
    half_width, pedicle_height, pedicle_width = (anatomy.canal_half_width_mm, anatomy.pedicle_height_mm,
                                                 anatomy.pedicle_width_mm)
    canal_back = a + _CANAL_GAP_MM + anatomy.canal_depth_mm
    abs_z = np.abs(z)
    pedicle = ((p >= 0.5 * a) & (p <= canal_back + 2))[..., None] & _inside_ellipse(
        (q + h / 2 - 1 - pedicle_height / 2)[..., None], pedicle_height / 2,
        abs_z - (half_width - 1 + pedicle_width / 2), pedicle_width / 2)
    lamina_front = canal_back + 0.25 * (q + h / 2)
    lamina = ((p >= lamina_front) & (p <= lamina_front + anatomy.lamina_thickness_mm) & (q >= -h / 2 + 1)
              & (q <= h / 2 + 3))[..., None] & (abs_z <= half_width + pedicle_width)
    along = p - (canal_back + 0.5 * anatomy.lamina_thickness_mm)
    length = segment.spinous_length_mm
    # A plate from the lamina, as tall as 3/4 of the body at its base, narrowing to the spinous height at the tip.
    base_fraction = np.sqrt(np.clip(along / length, 0.0, 1.0))
    spinous_half_height = 0.5 * (0.75 * h + (anatomy.spinous_height_mm - 0.75 * h) * base_fraction)
    spinous = ((along >= 0) & (along <= length) & (np.abs(q - (0.3 * along - 0.05 * h)) <= spinous_half_height)
               )[..., None] & (abs_z <= anatomy.spinous_half_width_mm)
    pillar = ((p >= canal_back - 3) & (p <= canal_back + 9) & (q >= -h / 2 - gap_above_mm / 2 + 0.8)
              & (q <= h / 2 + gap_below_mm / 2 - 0.8))[..., None] & (abs_z >= half_width - 1) & (
        abs_z <= half_width + 10)
    return pedicle | lamina | spinous | pillar


def _segment_crop(segment: _Segment, anatomy: _Anatomy, x: np.ndarray, y: np.ndarray) -> tuple[slice, slice]:
    """In-plane index ranges that contain the whole vertebra (body and posterior elements)."""
    p, q = segment.local_frame(x, y)
    reach = (segment.half_depth_mm + _CANAL_GAP_MM + anatomy.canal_depth_mm + anatomy.lamina_thickness_mm
             + segment.spinous_length_mm + 5)
    near = (np.abs(p) <= reach) & (q >= -segment.height_mm - 10) & (q <= segment.height_mm + 20)
    rows, columns = np.nonzero(near)
    return slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1)


def _paint_vertebrae(image: np.ndarray, anatomy: _Anatomy, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                     spacing: tuple[float, float, float], target_index: int | None, deformation: _Deformation,
                     fields: Mapping[str, np.ndarray],
                     marrow_texture: float) -> tuple[np.ndarray, np.ndarray, list[tuple[tuple[slice, slice], np.ndarray]]]:
    """Bone of every segment: a dark cortex 1.6 mm thick around textured marrow.

    Returns:
        image, the uint8 vertebra label map, and per segment (in-plane crop, body-marrow mask in that crop).
    """
    labels = np.zeros(image.shape, np.uint8)
    body_marrow = []
    discs = anatomy.disc_heights_mm
    for i, segment in enumerate(anatomy.segments):
        crop = _segment_crop(segment, anatomy, x, y)
        p, q = segment.local_frame(x[crop], y[crop])
        body = _body_mask(p, q, z, segment, deformation if i == target_index else _Deformation())
        bone = body | _posterior_elements_mask(p, q, z, segment, anatomy, discs[max(i - 1, 0)],
                                               discs[min(i, len(discs) - 1)])
        marrow = ndimage.distance_transform_edt(bone, sampling=spacing) > _CORTEX_THICKNESS_MM
        texture = 1 + marrow_texture * (fields["fine"][crop] + fields["coarse"][crop]) / np.sqrt(2)
        marrow_signal = segment.marrow_signal * texture * np.where(body, 1.0, 0.9)
        image[crop] = np.where(bone, np.where(marrow, marrow_signal, anatomy.signals["cortex"]), image[crop])
        labels[crop][bone] = segment.label
        body_marrow.append((crop, body & marrow))
    return image, labels, body_marrow


def _marrow_change_weight(change: _MarrowChange, segment: _Segment, x: np.ndarray, y: np.ndarray,
                          z: np.ndarray, roughness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weight in [0, 1], multiplicative signal factor) of a marrow change on the given grid points."""
    p, q = segment.local_frame(x, y)
    (p0, q0, r0), (rp, rq, rr) = change.center_pqr_mm, change.radii_pqr_mm
    rho = np.sqrt(((p - p0) / rp)[..., None] ** 2 + ((q - q0) / rq)[..., None] ** 2 + ((z - r0) / rr) ** 2)
    rho = rho * (1 + change.irregularity * roughness)
    weight = expit((1 - rho) * np.mean(change.radii_pqr_mm) / change.edge_width_mm)
    change_weight = weight
    if change.striation_depth > 0:
        across = p[..., None] * np.cos(change.striation_angle_rad) + z * np.sin(change.striation_angle_rad)
        stripes = (0.5 + 0.5 * np.cos(2 * np.pi * across / change.striation_period_mm)) ** 6
        change_weight = weight * (1 - change.striation_depth * stripes)
    return weight, 1 + change.relative_change * change_weight


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], amplitude: float) -> np.ndarray:
    """Smooth multiplicative field exp(amplitude * f), |f| <= 1: brightest posteriorly (spine coil), falling off
    towards the coil's superior and inferior ends, plus a random low-order polynomial."""
    u, v, w = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape], indexing="ij")
    terms = np.stack([u, v, w, u * v, u * u, v * v])
    field = 0.6 * u - 0.4 * v * v + np.tensordot(rng.uniform(-0.3, 0.3, len(terms)), terms, axes=1)
    return np.exp(amplitude * field / np.abs(field).max())


def _render(anatomy: _Anatomy, shape: tuple[int, int, int], spacing: tuple[float, float, float],
            lesion: _MarrowChange | None, deformation: _Deformation, incidental: Sequence[_MarrowChange],
            settings: DifficultySettings, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy signal (float32, fat = 1 before bias), vertebra labels (uint8) and lesion mask (bool) of ``shape``."""
    n0, n1, n2 = shape
    x = np.repeat((np.arange(n0) * spacing[0])[:, None], n1, axis=1)
    y = np.repeat((np.arange(n1) * spacing[1])[None, :], n0, axis=0)
    z = (np.arange(n2) - (n2 - 1) / 2) * spacing[2] - anatomy.midline_z_mm
    fields = {
        "fine": _smooth_noise(rng, shape, spacing, (0.8, 0.8, 0.8)),
        "coarse": _smooth_noise(rng, shape, spacing, (4.0, 4.0, 4.0)),
        "streaks": _smooth_noise(rng, shape, spacing, (0.8, 6.0, 2.0)),
        "roughness": _smooth_noise(rng, shape, spacing, (2.5, 2.5, 2.5)),
    }
    arc, nu = _curve_coordinates(anatomy, x, y)
    half_depth = np.interp(arc, anatomy.segment_arc_mm, [s.half_depth_mm for s in anatomy.segments])
    half_width = np.interp(arc, anatomy.segment_arc_mm, [s.half_width_mm for s in anatomy.segments])
    target_index = lesion.segment_index if lesion is not None else None

    image = _paint_soft_tissue(anatomy, x, z, arc, nu, half_depth, half_width, fields)
    image = _paint_canal(image, anatomy, z, arc, nu, half_depth, fields["fine"])
    image = _paint_discs(image, anatomy, x, y, z, target_index, deformation, fields["fine"])
    image, labels, body_marrow = _paint_vertebrae(image, anatomy, x, y, z, spacing, target_index, deformation,
                                                  fields, settings.marrow_texture)
    lesion_mask = np.zeros(shape, bool)
    for change in [*incidental, *([lesion] if lesion is not None else [])]:
        crop, marrow = body_marrow[change.segment_index]
        weight, factor = _marrow_change_weight(change, anatomy.segments[change.segment_index], x[crop], y[crop],
                                               z, fields["roughness"][crop])
        image[crop] = np.where(marrow, image[crop] * factor, image[crop])
        if change is lesion:
            lesion_mask[crop] = marrow & (weight >= 0.5)

    image = ndimage.gaussian_filter(image.astype(np.float32), sigma=(0.5, 0.5, 0.0))
    image *= _bias_field(rng, shape, settings.bias_amplitude * rng.uniform(0.8, 1.2))
    sigma = settings.noise_sigma * rng.uniform(0.85, 1.15)
    real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary), labels, lesion_mask


# ---------------------------------------------------------------------------------------------------------
# Acquisition geometry and one case
# ---------------------------------------------------------------------------------------------------------

def _rotation(angles_rad: Sequence[float]) -> np.ndarray:
    """Rotation about the RAS x, y and z axes (applied in that order), (3, 3)."""
    rx, ry, rz = angles_rad
    about_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    about_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    about_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return about_z @ about_y @ about_x


def _sample_acquisition(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[float, float, float],
                                                            np.ndarray, float]:
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
    streams = dict(zip(_STREAMS, (np.random.default_rng(child) for child in
                                  np.random.SeedSequence([int(seed), int(case_index)]).spawn(len(_STREAMS)))))
    shape, spacing, affine, intensity_scale = _sample_acquisition(streams["acquisition"])
    anatomy = _sample_anatomy(streams["anatomy"], shape, spacing)
    attributes, lesion, deformation = _sample_lesion(streams["lesion"], lesion_class, anatomy, settings)
    incidental = _sample_incidental_findings(streams["incidental"], anatomy, attributes.level, settings)
    signal, vertebrae, lesion_mask = _render(anatomy, shape, spacing, lesion, deformation, incidental, settings,
                                             streams["noise"])
    image = np.clip(np.rint(signal * intensity_scale), 0, np.iinfo(np.int16).max).astype(np.int16)
    return PhantomCase(image=image, vertebrae=vertebrae, lesion=lesion_mask.astype(np.uint8), affine=affine,
                       attributes=attributes, text=describe_case(attributes.to_json(), streams["text"]))


# ---------------------------------------------------------------------------------------------------------
# Data set: classes, split, files, datalist
# ---------------------------------------------------------------------------------------------------------

def _normalised_fractions(class_fractions: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """Class fractions as {class: fraction} summing to 1; a sequence is read in class-index order."""
    if isinstance(class_fractions, Mapping):
        unknown = set(class_fractions) - set(LESION_CLASSES)
        if unknown:
            raise ValueError(f"class_fractions has unknown classes {sorted(unknown)} (known: {list(LESION_CLASSES)})")
        values = [class_fractions.get(name, 0.0) for name in LESION_CLASSES]
    else:
        values = list(class_fractions)
        if len(values) != len(LESION_CLASSES):
            raise ValueError(f"class_fractions needs {len(LESION_CLASSES)} values {list(LESION_CLASSES)}, "
                             f"got {class_fractions!r}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"class_fractions must be non-negative numbers with a positive sum, got {class_fractions!r}")
    return {name: float(v) / float(sum(values)) for name, v in zip(LESION_CLASSES, values)}


def assign_classes(num_cases: int, seed: int,
                   class_fractions: Mapping[str, float] | Sequence[float] = DEFAULT_CLASS_FRACTIONS) -> list[str]:
    """Deterministic class of each case, the same prefix whatever ``num_cases`` is.

    The first cases hold two of every class with a positive fraction (in a seeded order), so from
    ``2 * number_of_classes`` cases on every class can appear in both splits; after that each case takes the
    class furthest below its target count, with seeded jitter, so the counts track ``class_fractions``.
    """
    fractions = _normalised_fractions(class_fractions)
    names = list(fractions)
    targets = np.array([fractions[name] for name in names])
    rng = np.random.default_rng([int(seed), _CLASS_STREAM])
    sequence = [names[i] for i in rng.permutation(np.repeat(np.flatnonzero(targets > 0), 2))]
    counts = np.array([sequence.count(name) for name in names], float)
    while len(sequence) < num_cases:
        deficit = targets * (len(sequence) + 1) - counts + rng.uniform(0.0, 0.9, len(names))
        choice = int(np.argmax(np.where(targets > 0, deficit, -np.inf)))
        sequence.append(names[choice])
        counts[choice] += 1
    return sequence[:num_cases]


def stratified_split(classes: Sequence[str], seed: int, test_fraction: float) -> list[bool]:
    """Whether each case is in the test split: ``round(test_fraction * n)`` of every class's n cases, at least
    one and at most n - 1 when n >= 2 and ``test_fraction`` > 0; chosen with a seeded shuffle."""
    rng = np.random.default_rng([int(seed), _SPLIT_STREAM])
    is_test = [False] * len(classes)
    for name in LESION_CLASSES:
        members = [i for i, c in enumerate(classes) if c == name]
        count = round(test_fraction * len(members))
        if test_fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        for i in rng.permutation(members)[:count]:
            is_test[int(i)] = True
    return is_test


def _nifti_gz_bytes(array: np.ndarray, affine: np.ndarray, description: str, is_label: bool) -> bytes:
    """Reproducible .nii.gz bytes: qform and sform = ``affine`` (code 1, scanner), mm units, slice axis 2,
    gzip without a timestamp."""
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    header = image.header
    header.set_xyzt_units("mm", "sec")
    header.set_dim_info(slice=2)
    header["descrip"] = description.encode("ascii")[:79]
    if is_label:
        header.set_intent("label")
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def _validate_dataset_arguments(num_cases: int, seed: int, difficulty: float, test_fraction: float) -> None:
    if isinstance(num_cases, bool) or not isinstance(num_cases, int) or num_cases < 1:
        raise ValueError(f"num_cases must be an integer >= 1, got {num_cases!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    difficulty_settings(difficulty)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in [0, 1), got {test_fraction!r}")


def _prepare_output_folder(out_dir: Path) -> None:
    """Create ``out_dir`` and its case folders and check that a file can be written there."""
    try:
        for folder in ("images", "vertebrae", "lesions"):
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise OSError(f"cannot write to the output folder {str(out_dir)!r}: {error.strerror or error}") from error


def generate_dataset(out_dir: str | os.PathLike, num_cases: int, seed: int, difficulty: float = 0.5,
                     test_fraction: float = 0.25,
                     class_fractions: Mapping[str, float] | Sequence[float] = DEFAULT_CLASS_FRACTIONS,
                     progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``num_cases`` cases and ``datalist.json`` to ``out_dir``; byte-identical for the same arguments.

    Layout: ``images/case_000.nii.gz`` (int16), ``vertebrae/case_000.nii.gz`` and ``lesions/case_000.nii.gz``
    (uint8), ``datalist.json`` (sorted keys, indent 2) with ``training`` and ``test`` lists of entries
    ``{case_id, image, vertebra_seg, lesion_seg, label, class_index, level, mask_labels, text, attributes}``,
    paths relative to ``out_dir``. Every file is written under a temporary name and renamed.

    Args:
        out_dir: output folder, created if needed.
        num_cases: at least 1; from 8 on every class with a positive fraction is in both splits.
        seed: non-negative integer.
        difficulty: in [0, 1], see :class:`DifficultySettings`.
        test_fraction: in [0, 1), share of each class that goes to ``test``.
        class_fractions: {class: fraction} or three fractions in class-index order; normalised to sum to 1.
        progress: called with one line per written case.

    Returns:
        The datalist as written.

    Raises:
        ValueError: for a bad argument; OSError: when ``out_dir`` cannot be written.
    """
    _validate_dataset_arguments(num_cases, seed, difficulty, test_fraction)
    fractions = _normalised_fractions(class_fractions)
    out_dir = Path(out_dir)
    _prepare_output_folder(out_dir)
    classes = assign_classes(num_cases, seed, fractions)
    is_test = stratified_split(classes, seed, test_fraction)
    splits: dict[str, list[dict[str, Any]]] = {"training": [], "test": []}
    for index, lesion_class in enumerate(classes):
        case = generate_case(seed, index, lesion_class, difficulty)
        case_id = f"case_{index:03d}"
        paths = {key: f"{folder}/{case_id}.nii.gz" for key, folder in
                 (("image", "images"), ("vertebra_seg", "vertebrae"), ("lesion_seg", "lesions"))}
        for key, array, description, is_label in (
                ("image", case.image, "SYNTHETIC spine MRI phantom, T1w sagittal", False),
                ("vertebra_seg", case.vertebrae, "SYNTHETIC vertebra labels (TotalSegmentator v2)", True),
                ("lesion_seg", case.lesion, "SYNTHETIC lesion mask", True)):
            write_atomically(out_dir / paths[key], _nifti_gz_bytes(array, case.affine, description, is_label))
        attributes = case.attributes
        split = "test" if is_test[index] else "training"
        splits[split].append({
            "case_id": case_id, **paths, "label": lesion_class, "class_index": LESION_CLASSES[lesion_class],
            "level": attributes.level, "mask_labels": [VERTEBRA_LABELS[attributes.level]], "text": case.text,
            "attributes": attributes.to_json(),
        })
        if progress is not None:
            size = f" {attributes.size_mm} mm" if attributes.size_mm else ""
            progress(f"[{index + 1}/{num_cases}] {case_id} {split:8s} {lesion_class:9s} {attributes.level}{size}")
    datalist = {
        "name": DATALIST_NAME,
        "description": ("Procedural sagittal T1-weighted lumbar-spine MRI phantom (synthetic, not patient data): "
                        "one lesion class per case, vertebra labels in TotalSegmentator v2 numbering, "
                        "lesion masks and radiology-style texts built from the lesion attributes."),
        "seed": seed,
        "difficulty": float(difficulty),
        "test_fraction": float(test_fraction),
        "class_fractions": fractions,
        "axis_codes": "".join(AXIS_CODES),
        "labels": dict(LESION_CLASSES),
        "vertebra_labels": dict(VERTEBRA_LABELS),
        "neighbour_bone_labels": dict(NEIGHBOUR_BONE_LABELS),
        **splits,
    }
    write_json_atomically(out_dir / "datalist.json", datalist)
    return datalist


def class_counts(entries: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Number of entries of each class, in class-index order."""
    return {name: sum(entry["label"] == name for entry in entries) for name in LESION_CLASSES}


# ---------------------------------------------------------------------------------------------------------
# Overview figure
# ---------------------------------------------------------------------------------------------------------

def _load_as_phantom_axes(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A NIfTI volume reoriented to :data:`AXIS_CODES` (P, I, R), with its spacing in mm along those axes."""
    image = nib.load(path)
    transform = nib.orientations.ornt_transform(nib.io_orientation(image.affine),
                                                nib.orientations.axcodes2ornt(AXIS_CODES))
    data = nib.orientations.apply_orientation(np.asanyarray(image.dataobj), transform)
    spacing = np.empty(3)
    spacing[transform[:, 0].astype(int)] = image.header.get_zooms()[:3]
    return data, tuple(float(v) for v in spacing)


def _pick_for_figure(entries: Sequence[Mapping[str, Any]], max_cases: int) -> list[Mapping[str, Any]]:
    """Up to ``max_cases`` entries in case order, taking the classes in turn."""
    by_class = [[e for e in entries if e["label"] == name] for name in LESION_CLASSES]
    picked: list[Mapping[str, Any]] = []
    while len(picked) < max_cases and any(by_class):
        for members in by_class:
            if members and len(picked) < max_cases:
                picked.append(members.pop(0))
    return sorted(picked, key=lambda e: e["case_id"])


def write_overview_figure(data_dir: str | os.PathLike, datalist: Mapping[str, Any], figure_path: str | os.PathLike,
                          max_cases: int = 6) -> Path:
    """PNG of up to ``max_cases`` cases (classes in turn): one sagittal slice each (the one with most lesion,
    otherwise the central one), anterior left, true mm aspect, vertebra outlines (target level yellow, others
    cyan), lesion outline red, the text as title."""
    from matplotlib.figure import Figure

    data_dir, figure_path = Path(data_dir), Path(figure_path)
    entries = _pick_for_figure(sorted([*datalist["training"], *datalist["test"]], key=lambda e: e["case_id"]),
                               max_cases)
    columns = min(3, len(entries))
    rows = -(-len(entries) // columns)
    figure = Figure(figsize=(4.2 * columns, 6.4 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axis, entry in zip(axes, entries):
        image, spacing = _load_as_phantom_axes(data_dir / entry["image"])
        vertebrae, _ = _load_as_phantom_axes(data_dir / entry["vertebra_seg"])
        lesion, _ = _load_as_phantom_axes(data_dir / entry["lesion_seg"])
        k = int(np.argmax(lesion.sum(axis=(0, 1)))) if lesion.any() else image.shape[2] // 2
        x = (np.arange(image.shape[0]) + 0.5) * spacing[0]
        y = (np.arange(image.shape[1]) + 0.5) * spacing[1]
        axis.imshow(image[:, :, k].T, cmap="gray", vmin=0, vmax=float(np.percentile(image, 99.5)),
                    extent=(0, x[-1] + x[0], y[-1] + y[0], 0), interpolation="nearest")
        for value in np.unique(vertebrae[:, :, k]):
            if value:
                colour, width = ("yellow", 1.2) if value == entry["mask_labels"][0] else ("cyan", 0.6)
                axis.contour(x, y, (vertebrae[:, :, k] == value).T, levels=[0.5], colors=colour, linewidths=width)
        if lesion[:, :, k].any():
            axis.contour(x, y, lesion[:, :, k].T, levels=[0.5], colors="red", linewidths=1.2)
        title = f"{entry['case_id']} ({entry['label']}, slice {k}): {entry['text']}"
        axis.set_title(textwrap.fill(title, 52), fontsize=7.5, loc="left")
        axis.set_axis_off()
    for axis in axes[len(entries):]:
        axis.set_axis_off()
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(figure_path, buffer.getvalue())
    return figure_path
