"""The described level's lesion (benign haemangioma or malignant metastasis / myeloma) and the incidental findings
elsewhere, with the attributes the text is built from."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bundle.demo.anatomy import MARROW_INSET_MM, S1_INDEX, SEGMENT_NAMES, Anatomy, Deformation, superior_endplate_q
from bundle.demo.difficulty import DifficultySettings
from bundle.demo.labels import LESION_LEVELS


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
class MarrowChange:
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


def sample_lesion(
    rng: np.random.Generator, lesion_class: str, anatomy: Anatomy, settings: DifficultySettings
) -> tuple[LesionAttributes, MarrowChange | None, Deformation]:
    """The described level, and for a lesion class the lesion and its body's deformation.

    The level is drawn first for every class, so a normal and a lesion case of the same seed and index share
    their level. The lesion is sized and placed to fit inside the (deformed) body's marrow; its position words
    are read from where it ended up.
    """
    level = LESION_LEVELS[rng.integers(len(LESION_LEVELS))]
    if lesion_class == "normal":
        return LesionAttributes(lesion_class="normal", level=level), None, Deformation()
    benign = lesion_class == "benign"
    segment_index = SEGMENT_NAMES.index(level)
    segment = anatomy.segments[segment_index]
    a, b, h = segment.half_depth_mm, segment.half_width_mm, segment.height_mm
    contrast = rng.uniform(*settings.lesion_contrast)
    low, high = settings.lesion_diameter_mm
    radius = rng.integers(round(low), round(high) + 1) / 2
    elongation = rng.uniform(0.8, 1.0, size=2)
    # Haemangiomas tend to be vertically oval; metastases are widest anteroposteriorly.
    radii = np.array(
        [radius * elongation[0], radius, radius * elongation[1]]
        if benign
        else [radius, radius * elongation[0], radius * elongation[1]]
    )
    height_loss = 0.0
    if not benign and rng.random() < settings.height_loss_probability:
        height_loss = rng.uniform(*settings.height_loss_fraction)

    inner_half_depth = a - MARROW_INSET_MM
    radii[0] = min(radii[0], inner_half_depth - 0.5)
    room = inner_half_depth - radii[0]
    direction = rng.integers(-1, 2)  # anterior, central, posterior
    p0 = direction * rng.uniform(0.6, 1.0) * room if direction else rng.uniform(-0.2, 0.2) * room
    top = float(superior_endplate_q(p0 - radii[0], segment, height_loss)) + MARROW_INSET_MM
    bottom = h / 2 - MARROW_INSET_MM
    radii[1] = min(radii[1], (bottom - top) / 2 - 0.5)
    room = (bottom - top) / 2 - radii[1]
    direction = rng.integers(-1, 2)  # superior, mid, inferior
    q0 = (top + bottom) / 2 + (direction * rng.uniform(0.6, 1.0) if direction else rng.uniform(-0.2, 0.2)) * room
    radii[2] = min(radii[2], b - MARROW_INSET_MM - 2.0)
    r0 = rng.uniform(-1.0, 1.0) * max(0.0, min(0.25 * b, b - MARROW_INSET_MM - radii[2]))

    # Position words: anterior/posterior when the centre is more than a fifth of the half depth in front of or
    # behind the body's middle; superior/inferior when it is more than 12 % of the local body height above or
    # below it.
    body_top = float(superior_endplate_q(p0, segment, height_loss))
    relative_q = (q0 - (body_top + h / 2) / 2) / (h / 2 - body_top)
    position_ap = "anterior" if p0 < -0.2 * a else "posterior" if p0 > 0.2 * a else "central"
    position_si = "superior" if relative_q < -0.12 else "inferior" if relative_q > 0.12 else "mid"
    posterior_bulge = not benign and position_ap == "posterior" and rng.random() < 0.5
    bulge_mm = rng.uniform(2.0, 4.0) if posterior_bulge else 0.0
    striated = benign and rng.random() < 0.6
    lesion = MarrowChange(
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
    deformation = Deformation(
        height_loss_fraction=height_loss, bulge_mm=bulge_mm, bulge_center_qr_mm=(float(q0), float(r0))
    )
    return attributes, lesion, deformation


def sample_incidental_findings(
    rng: np.random.Generator, anatomy: Anatomy, described_level: str, settings: DifficultySettings
) -> list[MarrowChange]:
    """Fatty marrow islands (small, bright, sharp) and Modic endplate changes (bright or dark bands).

    They go into T12-S1 bodies other than ``described_level``, so that level's description stays true.
    """
    candidates = [i for i, name in enumerate(SEGMENT_NAMES[: S1_INDEX + 1]) if name != described_level]
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
        findings.append(
            MarrowChange(
                segment_index=index,
                center_pqr_mm=tuple(float(v) for v in center),
                radii_pqr_mm=tuple(float(v) for v in radii),
                relative_change=float(change),
                edge_width_mm=edge,
            )
        )
    return findings
