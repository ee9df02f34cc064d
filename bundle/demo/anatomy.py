"""The random anatomy of one phantom case: vertebrae on a lordotic curve, discs, canal, soft tissue; lengths in mm,
signals relative to fat = 1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bundle.demo.labels import NEIGHBOUR_BONE_LABELS, VERTEBRA_LABELS

SEGMENT_NAMES = ("T12", "L1", "L2", "L3", "L4", "L5", "S1", "S2", "S3")


SEGMENT_LABELS = {
    **VERTEBRA_LABELS,
    "T12": NEIGHBOUR_BONE_LABELS["T12"],
    "S2": NEIGHBOUR_BONE_LABELS["sacrum"],
    "S3": NEIGHBOUR_BONE_LABELS["sacrum"],
}


S1_INDEX = SEGMENT_NAMES.index("S1")


CORTEX_THICKNESS_MM = 1.6


CANAL_GAP_MM = 1.5  # posterior longitudinal ligament between the body's back wall and the canal


MARROW_INSET_MM = 2.5  # lesions keep this far from the outer body surface (cortex plus endplate concavity)


@dataclass(frozen=True)
class Segment:
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
class Deformation:
    """Shape change of the lesion's vertebral body (malignant cases); lengths in mm."""

    height_loss_fraction: float = 0.0
    bulge_mm: float = 0.0
    bulge_center_qr_mm: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Anatomy:
    """Everything random about one case's anatomy; lengths in mm, signals relative to fat = 1."""

    segments: tuple[Segment, ...]
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


def _tilt_profile(
    arc_mm: np.ndarray, s1_arc_mm: float, top_tilt: float, s1_tilt: float, exponent: float, sacral_bend: float
) -> np.ndarray:
    """Tilt (rad) along the spine, a function of arc length relative to the S1 centre's (so it scales with
    the anatomy): lordosis growing from ``top_tilt`` (T12 top) to ``s1_tilt``, then the sacrum bending back
    anteriorly by ``sacral_bend`` per quarter of that length."""
    fraction = np.clip(arc_mm / s1_arc_mm, 0.0, None)
    lordosis = top_tilt + (s1_tilt - top_tilt) * np.minimum(fraction, 1.0) ** exponent
    return lordosis - sacral_bend * np.clip(fraction - 1.0, 0.0, None) / 0.25


def sample_anatomy(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> Anatomy:
    """Random anatomy that fits the field of view (scaled down when a large spine would not fit)."""
    count = len(SEGMENT_NAMES)
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
        tilts = _tilt_profile(arcs, arcs[S1_INDEX], top_tilt, s1_tilt, exponent, sacral_bend)
        needed = 0.5 * (half_depths[:-1] + half_depths[1:]) * np.diff(tilts) + 3.0
        discs[:S1_INDEX] = np.maximum(discs[:S1_INDEX], needed[:S1_INDEX])
        arcs = arc_positions(discs)

    arc_step = 0.5
    dense_arc = np.arange(-200.0, arcs[-1] + 200.0, arc_step)
    dense_tilt = _tilt_profile(dense_arc, arcs[S1_INDEX], top_tilt, s1_tilt, exponent, sacral_bend)
    dense_xy = np.cumsum(np.stack([np.sin(dense_tilt), np.cos(dense_tilt)], axis=1) * arc_step, axis=0)
    dense_xy -= np.array([np.interp(0.0, dense_arc, dense_xy[:, i]) for i in range(2)])
    centers = np.stack([np.interp(arcs, dense_arc, dense_xy[:, i]) for i in range(2)], axis=1)
    tilts = _tilt_profile(arcs, arcs[S1_INDEX], top_tilt, s1_tilt, exponent, sacral_bend)

    def corners(index: int, q_sign: float) -> np.ndarray:
        """(2, 2) grid (x, y) of the anterior and posterior corners of one endplate (q_sign -1: superior)."""
        return np.array(
            [
                _local_to_grid(centers[index], tilts[index], p, q_sign * heights[index] / 2)
                for p in (-half_depths[index], half_depths[index])
            ]
        )

    # Fit L1's top, S1's bottom, the lumbar bodies' front and the skin behind the L1-S1 spinous tips.
    spinous_lengths = np.where(np.arange(count) >= S1_INDEX, 0.4, 1.0) * spinous_length
    tip_p = half_depths + CANAL_GAP_MM + canal_depth + 0.5 * lamina_thickness + spinous_lengths
    tips = np.array(
        [
            _local_to_grid(centers[i], tilts[i], tip_p[i], 0.3 * spinous_lengths[i] - 0.05 * heights[i])
            for i in range(count)
        ]
    )
    top = min(corners(1, -1)[:, 1])
    bottom = max(corners(S1_INDEX, 1)[:, 1])
    anterior = min(min(corners(i, s)[:, 0]) for i in range(1, S1_INDEX + 1) for s in (-1, 1))
    posterior = max(tips[1 : S1_INDEX + 1, 0]) + cover
    fov_x, fov_y = shape[0] * spacing[0], shape[1] * spacing[1]
    top_margin, bottom_margin = discs[0] + 3.0, 4.0
    anterior_margin, air_margin = 10.0, 3.0
    scale = min(
        size_factor,
        (fov_y - top_margin - bottom_margin) / (bottom - top),
        (fov_x - anterior_margin - air_margin) / (posterior - anterior),
    )
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
        Segment(
            name=name,
            label=SEGMENT_LABELS[name],
            center_xy_mm=(float(centers[i, 0]), float(centers[i, 1])),
            tilt_rad=float(tilts[i]),
            half_depth_mm=float(scale * half_depths[i]),
            half_width_mm=float(scale * half_widths[i]),
            height_mm=float(scale * heights[i]),
            marrow_signal=float(marrow[i]),
            spinous_length_mm=float(scale * spinous_lengths[i]),
        )
        for i, name in enumerate(SEGMENT_NAMES)
    )
    signals = {
        "fat": 1.0,
        "muscle": rng.uniform(0.28, 0.36),
        "disc": rng.uniform(0.28, 0.34),
        "nucleus": rng.uniform(0.36, 0.44),
        "csf": rng.uniform(0.10, 0.16),
        "cord": rng.uniform(0.38, 0.46),
        "cortex": 0.07,
        "bowel": rng.uniform(0.38, 0.5),
        "skin": 0.55,
        "flow_void": 0.04,
        "ivc": rng.uniform(0.15, 0.25),
        "gas": 0.02,
        "nerve_root": rng.uniform(0.3, 0.4),
    }
    conus_segment = int(rng.choice([1, 2]))  # conus ends at L1 or L2
    return Anatomy(
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


def superior_endplate_q(p: np.ndarray | float, segment: Segment, height_loss_fraction: float) -> np.ndarray | float:
    """Local q (mm) of the superior endplate at posterior coordinate p: -h/2, pushed down anteriorly by a wedge.

    The loss is ``height_loss_fraction`` of the height at the anterior wall (p = -a) and none at the back.
    """
    a, h = segment.half_depth_mm, segment.height_mm
    return -h / 2 + height_loss_fraction * h * np.clip((a - p) / (2 * a), 0.0, 1.0)
