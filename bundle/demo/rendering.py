"""Rendering a phantom case's anatomy and marrow changes into a T1-weighted-like volume: tissue signals, blur, bias
field and Rician noise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import expit

from bundle.demo.anatomy import (
    CANAL_GAP_MM,
    CORTEX_THICKNESS_MM,
    S1_INDEX,
    Anatomy,
    Deformation,
    Segment,
    superior_endplate_q,
)
from bundle.demo.difficulty import DifficultySettings
from bundle.demo.lesions import MarrowChange


def _smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    sigma_mm: tuple[float, float, float],
) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation, float32 of ``shape``."""
    noise = ndimage.gaussian_filter(
        rng.standard_normal(shape).astype(np.float32),
        sigma=[s / d for s, d in zip(sigma_mm, spacing, strict=True)],
        mode="reflect",
    )
    return noise / noise.std()


def _curve_coordinates(anatomy: Anatomy, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(arc, nu), mm, of in-plane grid points: arc length of the nearest centreline point, and the offset
    from it along the spine's posterior normal."""
    tree = cKDTree(anatomy.centerline_xy_mm)
    _, nearest = tree.query(np.stack([x.ravel(), y.ravel()], axis=1))
    nearest = nearest.reshape(x.shape)
    tilt = anatomy.centerline_tilt_rad[nearest]
    dx = x - anatomy.centerline_xy_mm[nearest, 0]
    dy = y - anatomy.centerline_xy_mm[nearest, 1]
    return anatomy.centerline_arc_mm[nearest], dx * np.cos(tilt) - dy * np.sin(tilt)


def _inside_ellipse(
    u: np.ndarray, u_radius: np.ndarray | float, v: np.ndarray, v_radius: np.ndarray | float
) -> np.ndarray:
    """Whether offsets (u, v) from an ellipse's centre lie inside it (radii in the same unit, mm)."""
    return (u / u_radius) ** 2 + (v / v_radius) ** 2 <= 1.0


def _paint_soft_tissue(
    anatomy: Anatomy,
    x: np.ndarray,
    z: np.ndarray,
    arc: np.ndarray,
    nu: np.ndarray,
    half_depth: np.ndarray,
    half_width: np.ndarray,
    fields: Mapping[str, np.ndarray],
) -> np.ndarray:
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
    psoas_levels = ((arc > arcs[1] - 10) & (arc < arcs[S1_INDEX]))[..., None]
    psoas = psoas_levels & _inside_ellipse(
        (nu + 0.35 * half_depth)[..., None],
        6 + 10 * growth,
        np.abs(z) - (half_width[..., None] + 2 + 8 * growth),
        5 + 8 * growth,
    )
    image = np.where(psoas, signal["muscle"] * (1 + 0.05 * coarse), image)

    radius = anatomy.aorta_radius_mm
    aorta = (arc < arcs[4])[..., None] & _inside_ellipse(
        (nu + half_depth + 2 + radius)[..., None], radius, z - anatomy.aorta_z_mm, radius
    )
    image = np.where(aorta, signal["flow_void"], image)
    ivc_radius = 1.1 * radius
    ivc = (arc < arcs[5])[..., None] & _inside_ellipse(
        (nu + half_depth + 2 + 0.65 * ivc_radius)[..., None], 0.65 * ivc_radius, z - anatomy.ivc_z_mm, ivc_radius
    )
    image = np.where(ivc, signal["ivc"], image)

    image = np.where(trunk & (depth_below_skin < anatomy.fat_thickness_mm), fat, image)
    return np.where(trunk & (depth_below_skin < 2.0), signal["skin"], image)


def _paint_canal(
    image: np.ndarray,
    anatomy: Anatomy,
    z: np.ndarray,
    arc: np.ndarray,
    nu: np.ndarray,
    half_depth: np.ndarray,
    fine: np.ndarray,
) -> np.ndarray:
    """Epidural fat, neural foramina with exiting roots, the thecal sac (to S2) and the conus medullaris."""
    signal = anatomy.signals
    depth, half_width = anatomy.canal_depth_mm, anatomy.canal_half_width_mm
    front = half_depth + CANAL_GAP_MM
    abs_z = np.abs(z)
    bony_canal = ((nu >= front) & (nu <= front + depth))[..., None] & (abs_z <= half_width)
    image = np.where(bony_canal, signal["fat"] * 0.95, image)
    lateral = (abs_z > half_width) & (abs_z <= half_width + anatomy.pedicle_width_mm - 1)
    foramina = ((nu >= half_depth - 1) & (nu <= front + depth - 1))[..., None] & lateral
    image = np.where(foramina, signal["fat"] * 0.92, image)
    for segment, segment_arc in zip(anatomy.segments[:S1_INDEX], anatomy.segment_arc_mm, strict=False):
        root = _inside_ellipse(arc - (segment_arc + 0.2 * segment.height_mm), 2.8, nu - (front + 0.35 * depth), 2.8)
        image = np.where(root[..., None] & (abs_z > half_width - 2) & lateral, signal["nerve_root"], image)
    sac_center = front + 0.45 * depth
    sac = (arc <= anatomy.segment_arc_mm[7])[..., None] & _inside_ellipse(
        (nu - sac_center)[..., None], 0.45 * depth, z, half_width - 1
    )
    image = np.where(sac, signal["csf"] * (1 + 0.04 * fine), image)
    taper = np.sqrt(np.clip((anatomy.conus_end_arc_mm - arc) / 25.0, 0.0, 1.0))[..., None]
    cord = (taper > 0) & _inside_ellipse((nu - sac_center + 1)[..., None], 3.8 * taper + 1e-6, z, 4.5 * taper + 1e-6)
    return np.where(cord, signal["cord"], image)


def _paint_discs(
    image: np.ndarray,
    anatomy: Anatomy,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    target_index: int | None,
    deformation: Deformation,
    fine: np.ndarray,
) -> np.ndarray:
    """Discs between consecutive segments: wedge-shaped between the endplates, nucleus brighter than annulus."""
    signal = anatomy.signals
    for i, (upper, lower) in enumerate(zip(anatomy.segments[:-1], anatomy.segments[1:], strict=True)):
        _, q_upper = upper.local_frame(x, y)
        p_lower, q_lower = lower.local_frame(x, y)
        loss = deformation.height_loss_fraction if i + 1 == target_index else 0.0
        between = (q_upper >= upper.height_mm / 2 - 1.5) & (q_lower <= superior_endplate_q(p_lower, lower, loss) + 1.5)
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


def _body_mask(p: np.ndarray, q: np.ndarray, z: np.ndarray, segment: Segment, deformation: Deformation) -> np.ndarray:
    """Vertebral body (bool, in-plane shape of p plus z): rounded edges, waist, concave endplates, kidney-shaped
    cross-section, optional anterior wedge and posterior bulge."""
    a, b, h = segment.half_depth_mm, segment.half_width_mm, segment.height_mm
    top = superior_endplate_q(p, segment, deformation.height_loss_fraction)
    middle, half_height = (top + h / 2) / 2, (h / 2 - top) / 2
    t = (q - middle) / half_height
    waist = (1 - 0.07 * (1 - np.clip(t * t, 0.0, 1.0)))[..., None]
    p3, q3 = p[..., None], q[..., None]
    back = p3 > 0
    p_shaped = p3 - back * 0.15 * a * (z / b) ** 2
    if deformation.bulge_mm > 0:
        q0, r0 = deformation.bulge_center_qr_mm
        p_shaped = p_shaped - back * deformation.bulge_mm * np.exp(-((q3 - q0) ** 2 + (z - r0) ** 2) / (2 * 7.0**2))
    rho = ((np.abs(p_shaped) / (a * waist)) ** 2.6 + (np.abs(z) / (b * waist)) ** 2.6) ** (1 / 2.6)
    vertical = np.abs(t)[..., None] + 1.2 * np.clip(1 - rho**2, 0.0, None) / half_height[..., None]
    return rho**6 + vertical**6 <= 1.0


def _posterior_elements_mask(
    p: np.ndarray,
    q: np.ndarray,
    z: np.ndarray,
    segment: Segment,
    anatomy: Anatomy,
    gap_above_mm: float,
    gap_below_mm: float,
) -> np.ndarray:
    """Pedicles, laminae, spinous process and articular pillars (bool, in-plane shape of p plus z)."""
    a, h = segment.half_depth_mm, segment.height_mm
    half_width, pedicle_height, pedicle_width = (
        anatomy.canal_half_width_mm,
        anatomy.pedicle_height_mm,
        anatomy.pedicle_width_mm,
    )
    canal_back = a + CANAL_GAP_MM + anatomy.canal_depth_mm
    abs_z = np.abs(z)
    pedicle = ((p >= 0.5 * a) & (p <= canal_back + 2))[..., None] & _inside_ellipse(
        (q + h / 2 - 1 - pedicle_height / 2)[..., None],
        pedicle_height / 2,
        abs_z - (half_width - 1 + pedicle_width / 2),
        pedicle_width / 2,
    )
    lamina_front = canal_back + 0.25 * (q + h / 2)
    lamina = (
        (p >= lamina_front) & (p <= lamina_front + anatomy.lamina_thickness_mm) & (q >= -h / 2 + 1) & (q <= h / 2 + 3)
    )[..., None] & (abs_z <= half_width + pedicle_width)
    along = p - (canal_back + 0.5 * anatomy.lamina_thickness_mm)
    length = segment.spinous_length_mm
    # A plate from the lamina, as tall as 3/4 of the body at its base, narrowing to the spinous height at the tip.
    base_fraction = np.sqrt(np.clip(along / length, 0.0, 1.0))
    spinous_half_height = 0.5 * (0.75 * h + (anatomy.spinous_height_mm - 0.75 * h) * base_fraction)
    spinous = ((along >= 0) & (along <= length) & (np.abs(q - (0.3 * along - 0.05 * h)) <= spinous_half_height))[
        ..., None
    ] & (abs_z <= anatomy.spinous_half_width_mm)
    pillar = (
        (
            (p >= canal_back - 3)
            & (p <= canal_back + 9)
            & (q >= -h / 2 - gap_above_mm / 2 + 0.8)
            & (q <= h / 2 + gap_below_mm / 2 - 0.8)
        )[..., None]
        & (abs_z >= half_width - 1)
        & (abs_z <= half_width + 10)
    )
    return pedicle | lamina | spinous | pillar


def _segment_crop(segment: Segment, anatomy: Anatomy, x: np.ndarray, y: np.ndarray) -> tuple[slice, slice]:
    """In-plane index ranges that contain the whole vertebra (body and posterior elements)."""
    p, q = segment.local_frame(x, y)
    reach = (
        segment.half_depth_mm
        + CANAL_GAP_MM
        + anatomy.canal_depth_mm
        + anatomy.lamina_thickness_mm
        + segment.spinous_length_mm
        + 5
    )
    near = (np.abs(p) <= reach) & (q >= -segment.height_mm - 10) & (q <= segment.height_mm + 20)
    rows, columns = np.nonzero(near)
    return slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1)


def _paint_vertebrae(
    image: np.ndarray,
    anatomy: Anatomy,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    spacing: tuple[float, float, float],
    target_index: int | None,
    deformation: Deformation,
    fields: Mapping[str, np.ndarray],
    marrow_texture: float,
) -> tuple[np.ndarray, np.ndarray, list[tuple[tuple[slice, slice], np.ndarray]]]:
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
        body = _body_mask(p, q, z, segment, deformation if i == target_index else Deformation())
        bone = body | _posterior_elements_mask(
            p, q, z, segment, anatomy, discs[max(i - 1, 0)], discs[min(i, len(discs) - 1)]
        )
        marrow = ndimage.distance_transform_edt(bone, sampling=spacing) > CORTEX_THICKNESS_MM
        texture = 1 + marrow_texture * (fields["fine"][crop] + fields["coarse"][crop]) / np.sqrt(2)
        marrow_signal = segment.marrow_signal * texture * np.where(body, 1.0, 0.9)
        image[crop] = np.where(bone, np.where(marrow, marrow_signal, anatomy.signals["cortex"]), image[crop])
        labels[crop][bone] = segment.label
        body_marrow.append((crop, body & marrow))
    return image, labels, body_marrow


def _marrow_change_weight(
    change: MarrowChange, segment: Segment, x: np.ndarray, y: np.ndarray, z: np.ndarray, roughness: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
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


def render_case(
    anatomy: Anatomy,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    lesion: MarrowChange | None,
    deformation: Deformation,
    incidental: Sequence[MarrowChange],
    settings: DifficultySettings,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    image, labels, body_marrow = _paint_vertebrae(
        image, anatomy, x, y, z, spacing, target_index, deformation, fields, settings.marrow_texture
    )
    lesion_mask = np.zeros(shape, bool)
    for change in [*incidental, *([lesion] if lesion is not None else [])]:
        crop, marrow = body_marrow[change.segment_index]
        weight, factor = _marrow_change_weight(
            change, anatomy.segments[change.segment_index], x[crop], y[crop], z, fields["roughness"][crop]
        )
        image[crop] = np.where(marrow, image[crop] * factor, image[crop])
        if change is lesion:
            lesion_mask[crop] = marrow & (weight >= 0.5)

    image = ndimage.gaussian_filter(image.astype(np.float32), sigma=(0.5, 0.5, 0.0))
    image *= _bias_field(rng, shape, settings.bias_amplitude * rng.uniform(0.8, 1.2))
    sigma = settings.noise_sigma * rng.uniform(0.85, 1.15)
    real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary), labels, lesion_mask
