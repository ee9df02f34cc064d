"""Anatomy and style attributes of a vertebra and its lesion, measured from the image and two masks.

The attribute captioner of VG-MedGen (``docs/vgmedgen.md``) describes each vertebra's working window by what is
*measured* here, not by what a dataset claims. Arrays are ``(X, A, S)`` as in :mod:`bundle.metrics.lesion_measure`
(axis 0 the sagittal slice, axis 1 posterior -> anterior, axis 2 inferior -> superior: RAS); ``spacing`` is the
voxel size along them in mm. The image is any intensity unit with background 0; every signal figure is relative
to the surrounding marrow, so a scale factor does not change it.

Anatomy (:func:`measure_attributes`):

- ``size_mm``: the major axis of the lesion's largest slice (:func:`major_diameter`), of its largest connected
  region (:func:`largest_component`).
- ``shape``: in the lesion's largest slice, ``"irregular"`` when its solidity (area / convex-hull area) is below
  :data:`IRREGULAR_SOLIDITY`, else ``"round"`` when the ratio of its principal axes is below
  :data:`OVAL_ASPECT`, else ``"oval"``.
- ``margin``: how far the lesion's signal spills over its outline: the median signal change in a shell
  :data:`SHELL_MM` wide just outside the lesion (inside the marrow) over the change in its core. A sharp edge
  leaves almost nothing outside (about 0.05 for a 0.35 mm edge 1 mm out), a blurred or infiltrative one a third
  or more; ``"ill-defined"`` at or above :data:`ILL_DEFINED_SPILL`.
- ``position_ap``, ``position_si``: the lesion centroid in the vertebral body's frame
  (:class:`bundle.metrics.lesion_measure.BodyFrame`, the same words as the phantom and the adherence measure).
- ``height_loss_percent``: ``100 * (1 - anterior height / posterior height)`` of the vertebral body, heights
  taken in the front and back fifth of its depth along its own superior-inferior axis; 0 below
  :data:`HEIGHT_LOSS_MIN`.

Style:

- ``signal`` and ``contrast``: the median of the image in the lesion's core (the lesion 1 mm in from its
  outline) against the median of the *surrounding* marrow (a ring :data:`RING_MM` outside the lesion, inside the
  vertebral body's marrow): ``contrast = |lesion / ring - 1|``; ``"hyperintense"`` / ``"hypointense"`` beyond
  :data:`ISOINTENSE_LIMIT`, else ``"isointense"``; a vertebra without a lesion is ``"normal"``.
- ``striations``: coarse vertical trabecular lines, i.e. lines running along the vertebral body's own
  superior-inferior axis (tilted with the body, not along the image's columns): in the lesion, with its smooth
  trend removed, the strongest periodic component along the body's anterior-posterior axis (periods
  :data:`STRIPE_PERIODS_MM`) is :data:`STRIATION_POWER_RATIO` times or more the strongest along its
  superior-inferior axis (:func:`stripe_ratio`).
- ``texture``: ``"heterogeneous"`` when the spread of the lesion core (interquartile range / median) is more than
  :data:`HETEROGENEOUS_RATIO` times that of the surrounding marrow, else ``"homogeneous"``; without a lesion,
  the marrow's own spread against :data:`MARROW_HETEROGENEOUS_IQR`.

The thresholds were set once on the phantom's calibration seed (the demo data, seed 0; :data:`STRIATION_POWER_RATIO`
on seeds 0, 10 and 11) and are frozen; the agreement figures in ``docs/vgmedgen.md`` are measured on other seeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from bundle.metrics.lesion_measure import BodyFrame, marrow_region, vertebral_body

CORE_INSET_MM = 1.0
RING_MM = (3.0, 8.0)
SHELL_MM = 2.0
ISOINTENSE_LIMIT = 0.05
ILL_DEFINED_SPILL = 0.38
STRIATION_POWER_RATIO = 1.9
STRIPE_TREND_MM = 2.0
STRIPE_TAPER_MM = (0.5, 2.5)
STRIPE_PERIODS_MM = (2.4, 10.0)
STRIPE_FREQUENCIES = 24
HETEROGENEOUS_RATIO = 2.0
MARROW_HETEROGENEOUS_IQR = 0.2
IRREGULAR_SOLIDITY = 0.85
OVAL_ASPECT = 1.2
HEIGHT_LOSS_MIN = 0.08
END_FRACTION = 0.15
HEIGHT_BIN_MM = 1.5


@dataclass(frozen=True)
class MeasuredAttributes:
    """What :func:`measure_attributes` measured; the phantom's attribute names where it has them.

    Attributes:
        lesion: whether the lesion mask has voxels in the vertebra.
        size_mm: largest in-plane lesion diameter, mm (0 without a lesion).
        shape: ``"round" | "oval" | "irregular"`` (None without a lesion).
        margin: ``"well-defined" | "ill-defined"`` (None without a lesion).
        edge_spill: the lesion's signal change just outside its outline over that in its core (0 without a
            lesion).
        position_ap, position_si: location words of the lesion centroid (None without a lesion).
        height_loss_percent: anterior height loss of the vertebral body, percent (0 below the noise floor).
        signal: ``"hyperintense" | "hypointense" | "isointense" | "normal"`` (normal: no lesion).
        contrast: ``|lesion / surrounding marrow - 1|`` (0.3 = 30 %).
        striations: vertical trabecular striations in the lesion.
        stripe_ratio: :func:`stripe_ratio` of the lesion core, behind ``striations`` (about 1 for noise).
        texture: ``"homogeneous" | "heterogeneous"``.
    """

    lesion: bool
    size_mm: float = 0.0
    shape: str | None = None
    margin: str | None = None
    edge_spill: float = 0.0
    position_ap: str | None = None
    position_si: str | None = None
    height_loss_percent: int = 0
    signal: str = "normal"
    contrast: float = 0.0
    striations: bool = False
    stripe_ratio: float = 1.0
    texture: str = "homogeneous"

    def to_json(self) -> dict:
        return asdict(self)


def _check(image: np.ndarray, vertebra: np.ndarray, lesion: np.ndarray | None, spacing) -> np.ndarray:
    spacing = np.asarray(spacing, np.float64)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing.tolist()}")
    if np.ndim(image) != 3:
        raise ValueError(f"the image must be 3-D (X, A, S), got shape {np.shape(image)}")
    shapes = {"image": np.shape(image), "vertebra": np.shape(vertebra)}
    if lesion is not None:
        shapes["lesion"] = np.shape(lesion)
    if len(set(shapes.values())) > 1:
        raise ValueError(f"image, vertebra and lesion masks differ in shape: {shapes}")
    if not np.all(np.isfinite(image)):
        raise ValueError("the image has NaN or infinite voxels")
    if not np.any(vertebra):
        raise ValueError("the vertebra mask is empty; nothing to describe")
    return spacing


def _in_plane(mask: np.ndarray, spacing: np.ndarray, distance_mm: float, grow: bool) -> np.ndarray:
    """``mask`` grown (``grow``) or shrunk by ``distance_mm`` within each sagittal slice."""
    sampling = spacing[1:]
    out = np.zeros_like(mask, bool)
    for k in range(mask.shape[0]):
        if grow:
            out[k] = ndimage.distance_transform_edt(~mask[k], sampling=sampling) <= distance_mm
        elif mask[k].any():
            out[k] = ndimage.distance_transform_edt(mask[k], sampling=sampling) > distance_mm
    return out


def _detrended(values: np.ndarray, inside: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``values`` of a 2-D slice inside ``inside`` minus their smooth trend there (a Gaussian of
    :data:`STRIPE_TREND_MM` normalised to the region, so the region's edge and a bias field are not stripes)."""
    sigma = STRIPE_TREND_MM / spacing
    weight = ndimage.gaussian_filter(inside.astype(np.float64), sigma)
    trend = ndimage.gaussian_filter(np.where(inside, values, 0.0), sigma) / np.maximum(weight, 1e-9)
    return (values - trend)[inside]


def stripe_ratio(relative: np.ndarray, region: np.ndarray, spacing: np.ndarray, frame: BodyFrame) -> float:
    """How much more periodic the region's signal is across the body's superior-inferior axis than along it.

    In each sagittal slice the region's detrended signal (:func:`_detrended`), tapered to 0 towards the region's
    outline (weight rising from 0 to 1 between :data:`STRIPE_TAPER_MM` in from it, so a sharp lesion edge is no
    periodic signal), is projected on sinusoids of :data:`STRIPE_FREQUENCIES` periods in :data:`STRIPE_PERIODS_MM`
    along ``frame.ap_axis`` (lines running along the body's own SI axis, whatever its tilt in the image) and along
    ``frame.si_axis``; the powers are summed over the slices per period (a line's phase may change from slice to
    slice, its period does not) and the ratio of the two directions' largest powers is returned: about 1 for noise
    or isotropic texture.
    """
    frequencies = np.linspace(1 / STRIPE_PERIODS_MM[1], 1 / STRIPE_PERIODS_MM[0], STRIPE_FREQUENCIES)
    power = np.zeros((2, STRIPE_FREQUENCIES))
    for k in np.nonzero(region.any(axis=(1, 2)))[0]:
        if region[k].sum() < 10:
            continue
        residual = _detrended(relative[k], region[k], spacing[1:])
        depth = ndimage.distance_transform_edt(region[k], sampling=spacing[1:])[region[k]]
        low, high = STRIPE_TAPER_MM
        residual = residual * np.clip((depth - low) / (high - low), 0.0, 1.0)
        points = np.argwhere(region[k]) * spacing[1:] - frame.centre
        for row, axis in enumerate((frame.ap_axis, frame.si_axis)):
            waves = np.exp(-2j * np.pi * np.outer(frequencies, points @ axis))
            power[row] += np.abs(waves @ residual) ** 2 / len(residual)
    if not power.any():
        return 1.0
    return float(power[0].max() / max(power[1].max(), 1e-12))


def _spread(values: np.ndarray) -> float:
    """Interquartile range over median (a robust coefficient of variation)."""
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float((q3 - q1) / max(abs(median), 1e-9))


def height_loss(body: np.ndarray, spacing: np.ndarray) -> float:
    """``1 - anterior / posterior`` wall height of a vertebral body ``(X, A, S)``.

    The body's height (its extent along its own superior-inferior axis, all slices together) is taken in
    :data:`HEIGHT_BIN_MM` bins of depth, a straight line is fitted to it over the middle of the depth (the rounded
    corners of the front and back :data:`END_FRACTION` left out) and read at the two walls: an anterior wedge
    lowers the height linearly from back to front.
    """
    frame = BodyFrame.of(body, spacing)
    _, a, s = np.nonzero(body)
    points = np.stack([a * spacing[1], s * spacing[2]], axis=1) - frame.centre
    depth, height = points @ frame.ap_axis, points @ frame.si_axis
    front, back = np.percentile(depth, [1, 99])
    band = END_FRACTION * (back - front)
    edges = np.arange(front + band, back - band + HEIGHT_BIN_MM, HEIGHT_BIN_MM)
    centres, heights = [], []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (depth >= low) & (depth < high)
        if inside.sum() >= 2:
            centres.append((low + high) / 2)
            heights.append(float(np.ptp(height[inside])))
    if len(centres) < 2:
        return 0.0
    slope, intercept = np.polyfit(centres, heights, 1)
    return 1.0 - (slope * front + intercept) / max(slope * back + intercept, 1e-6)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected region of a mask (stray voxels of a segmentation are not the lesion)."""
    regions, count = ndimage.label(mask, np.ones((3, 3, 3), bool))
    if count <= 1:
        return mask
    sizes = ndimage.sum_labels(np.ones(mask.shape), regions, index=range(1, count + 1))
    return regions == 1 + int(np.argmax(sizes))


def major_diameter(lesion: np.ndarray, spacing: np.ndarray) -> float:
    """The major axis, mm, of the ellipse with the same second moments as the lesion's largest slice
    (``4 sqrt(largest eigenvalue)`` of its pixel positions' covariance, plus one pixel): unlike the largest
    pixel-to-pixel distance it is not set by a thin protrusion of an irregular outline."""
    largest = int(np.argmax(lesion.sum(axis=(1, 2))))
    points = np.argwhere(lesion[largest]) * spacing[1:]
    if len(points) < 3:
        return float(spacing[1:].mean()) * len(points)
    return 4.0 * float(np.sqrt(np.linalg.eigvalsh(np.cov(points.T))[-1])) + float(spacing[1:].mean())


def _shape(lesion: np.ndarray, spacing: np.ndarray) -> str:
    largest = int(np.argmax(lesion.sum(axis=(1, 2))))
    points = np.argwhere(lesion[largest]) * spacing[1:]
    if len(points) < 5:
        return "round"
    try:
        hull = ConvexHull(points)
    except QhullError:  # a line of pixels
        return "oval"
    hull_area = hull.volume + 0.5 * hull.area * float(spacing[1:].mean())  # pixel centres -> pixel edges
    solidity = len(points) * float(np.prod(spacing[1:])) / hull_area
    if solidity < IRREGULAR_SOLIDITY:
        return "irregular"
    eigenvalues = np.linalg.eigvalsh(np.cov((points - points.mean(axis=0)).T))
    aspect = float(np.sqrt(eigenvalues[1] / max(eigenvalues[0], 1e-9)))
    return "round" if aspect < OVAL_ASPECT else "oval"


def measure_attributes(
    image: np.ndarray, vertebra: np.ndarray, lesion: np.ndarray | None, spacing
) -> MeasuredAttributes:
    """The attributes of the module docstring for one vertebra.

    Args:
        image: ``(X, A, S)`` volume (one sagittal slice: ``X = 1``), background 0.
        vertebra: the target vertebra's mask, same shape.
        lesion: the lesion mask, same shape, or None; only its voxels inside the vertebra count (lesions of
            other vertebrae are not this vertebra's).
        spacing: voxel size along the three axes, mm.

    Raises:
        ValueError: for a shape mismatch, a non-finite image, wrong spacing or an empty vertebra mask.
    """
    spacing = _check(image, vertebra, lesion, spacing)
    image = np.asarray(image, np.float64)
    vertebra = np.asarray(vertebra, bool)
    body = vertebral_body(vertebra, spacing)
    marrow = marrow_region(body, spacing)
    loss = height_loss(body, spacing)
    loss_percent = round(100 * loss) if loss >= HEIGHT_LOSS_MIN else 0
    lesion = np.zeros_like(vertebra) if lesion is None else largest_component((np.asarray(lesion) > 0) & vertebra)
    if not lesion.any():
        texture = "heterogeneous" if _spread(image[marrow]) > MARROW_HETEROGENEOUS_IQR else "homogeneous"
        return MeasuredAttributes(lesion=False, height_loss_percent=loss_percent, texture=texture)

    shell, near, far = (_in_plane(lesion, spacing, d, grow=True) for d in (SHELL_MM, *RING_MM))
    shell = shell & ~lesion & marrow
    ring = far & ~near & marrow
    if ring.sum() < 10:  # a lesion filling the body: the rest of its marrow
        ring = marrow & ~lesion if (marrow & ~lesion).sum() >= 10 else body & ~lesion
    core = _in_plane(lesion, spacing, CORE_INSET_MM, grow=False)
    core = core if core.sum() >= 5 else lesion
    reference = float(np.median(image[ring]))
    if not np.isfinite(reference) or reference <= 0:
        raise ValueError(f"the marrow around the lesion must have a positive signal, got median {reference}")
    relative = image / reference
    change = float(np.median(relative[core])) - 1.0
    signal = (
        "hyperintense" if change > ISOINTENSE_LIMIT else "hypointense" if change < -ISOINTENSE_LIMIT else "isointense"
    )

    spill = (float(np.median(relative[shell])) - 1.0) / change if shell.sum() >= 5 else 0.0
    frame = BodyFrame.of(body, spacing)
    stripes = stripe_ratio(relative, core, spacing, frame)
    heterogeneous = _spread(relative[core]) > HETEROGENEOUS_RATIO * _spread(relative[ring])
    position_ap, position_si = frame.position_words(
        body, spacing, (np.argwhere(lesion)[:, 1:] * spacing[1:]).mean(axis=0)
    )
    return MeasuredAttributes(
        lesion=True,
        size_mm=major_diameter(lesion, spacing),
        shape=_shape(lesion, spacing),
        margin="well-defined" if spill < ILL_DEFINED_SPILL else "ill-defined",
        edge_spill=spill,
        position_ap=position_ap,
        position_si=position_si,
        height_loss_percent=loss_percent,
        signal=signal,
        contrast=abs(change),
        striations=stripes >= STRIATION_POWER_RATIO,
        stripe_ratio=stripes,
        texture="heterogeneous" if heterogeneous else "homogeneous",
    )
