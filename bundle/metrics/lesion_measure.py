"""The lesion in a change volume: its sign, size, place in the vertebral body and through-plane coherence.

Everything works on one case's *change*, ``after - before`` (a synthetic volume minus its normal source, or a
phantom lesion case minus its lesion-free twin), inside the vertebra's label. Arrays are ``(X, A, S)``: axis 0 the
sagittal slice index, axis 1 posterior -> anterior, axis 2 inferior -> superior (nibabel's closest canonical
orientation, RAS); a single 2-D sagittal slice is an array with ``X = 1``.

The measure (:func:`measure_lesion`):

1. ``r = (after - before) / m`` with ``m`` the median of ``before`` in the vertebral body's marrow, and
   ``r_s`` = ``r`` smoothed in-plane with a Gaussian of :data:`SMOOTH_MM` (not through-plane), so re-synthesised
   marrow texture and noise do not count as a lesion.
2. Candidates: the connected regions (26-neighbourhood) of ``|r_s| > ABS_THRESHOLD`` in the body's marrow (the
   body, :func:`vertebral_body`, minus a :data:`MARROW_INSET_MM` rim, where cortex and partial volume change with
   any re-synthesis) of at least :data:`MIN_AREA_MM2`; the lesion is the one of the largest mass
   ``sum |r_s|``, its sign the direction (+1 brighter, -1 darker). No candidate: no lesion (direction 0).
3. Half maximum: the lesion region is the connected region, around its strongest voxel, of
   ``sign * r_s >= max(ABS_THRESHOLD, HALF * peak)``, ``peak`` the 95th percentile of ``sign * r_s`` in the
   candidate (the phantom draws its lesion masks where the lesion weight is at least one half), so the region does
   not depend on the lesion's contrast.
4. Size: the largest in-plane diameter of that region over its slices (largest distance between two pixel centres
   plus one pixel), mm; through-plane the slices are 3-4 mm thick, so the extent is reported on its own.
5. Location: the region's centroid in the body's own sagittal frame (:class:`BodyFrame`), named with the phantom's
   words: anterior / posterior beyond 20 % of the half depth from the middle, superior / inferior beyond 12 % of
   the local body height from the local middle, else central / mid.
6. Through-plane: the slices the region reaches (count and mm) and :func:`neighbour_correlation` of ``r_s`` over
   them and one slice more on each side.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import pdist

SMOOTH_MM = 1.0
ABS_THRESHOLD = 0.08
HALF = 0.5
MIN_AREA_MM2 = 4.0
CORE_MM = 7.0
MARROW_INSET_MM = 3.0
AP_FRACTION = 0.2
SI_FRACTION = 0.12
_STRUCTURE = np.ones((3, 3, 3), bool)


def vertebral_body(vertebra: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The vertebral body of a whole-vertebra mask ``(X, A, S)``: its largest core deeper than :data:`CORE_MM`
    (pedicles, laminae and spinous process are thinner), grown back by :data:`CORE_MM` inside the mask. A mask
    without such a core is returned as it is."""
    vertebra = np.asarray(vertebra, bool)
    depth = ndimage.distance_transform_edt(vertebra, sampling=spacing)
    core, count = ndimage.label(depth > CORE_MM)
    if count == 0:
        return vertebra.copy()
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones(core.shape), core, index=range(1, count + 1))))
    return (ndimage.distance_transform_edt(core != largest, sampling=spacing) <= CORE_MM) & vertebra


def marrow_region(body: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The body's marrow: deeper than :data:`MARROW_INSET_MM` inside it (cortex and partial volume excluded); the
    body itself when nothing is that deep."""
    marrow = ndimage.distance_transform_edt(body, sampling=spacing) > MARROW_INSET_MM
    return marrow if marrow.any() else body


@dataclass(frozen=True)
class BodyFrame:
    """The vertebral body's frame in the sagittal plane, mm: ``centre`` (A, S), unit axes pointing posterior
    (``ap_axis``) and inferior (``si_axis``), and the half depth along ``ap_axis``. The longer principal axis of
    the body's pixels is anterior-posterior (lumbar bodies are deeper than tall)."""

    centre: np.ndarray
    ap_axis: np.ndarray
    si_axis: np.ndarray
    half_depth: float

    @classmethod
    def of(cls, body: np.ndarray, spacing: np.ndarray) -> BodyFrame:
        points = _plane_points(body, spacing)
        centre = points.mean(axis=0)
        _, vectors = np.linalg.eigh(np.cov((points - centre).T))
        ap, si = vectors[:, 1], vectors[:, 0]
        ap = ap if ap[0] < 0 else -ap  # posterior: decreasing A
        si = si if si[1] < 0 else -si  # inferior: decreasing S
        depth = (points - centre) @ ap
        return cls(centre, ap, si, float(np.percentile(depth, 99) - np.percentile(depth, 1)) / 2)

    def position_words(self, body: np.ndarray, spacing: np.ndarray, point_as: np.ndarray) -> tuple[str, str]:
        """(``"anterior" | "central" | "posterior"``, ``"superior" | "mid" | "inferior"``) of a point (A, S) mm.
        The superior-inferior word is relative to the body's local height within 3 mm of the point's depth."""
        p, q = (point_as - self.centre) @ self.ap_axis, (point_as - self.centre) @ self.si_axis
        points = _plane_points(body, spacing) - self.centre
        near = np.abs(points @ self.ap_axis - p) < 3.0
        heights = points[near] @ self.si_axis if near.any() else points @ self.si_axis
        top, bottom = np.percentile(heights, [1, 99])
        relative_q = (q - (top + bottom) / 2) / max(bottom - top, 1e-6)
        limit = AP_FRACTION * self.half_depth
        ap = "anterior" if p < -limit else "posterior" if p > limit else "central"
        si = "superior" if relative_q < -SI_FRACTION else "inferior" if relative_q > SI_FRACTION else "mid"
        return ap, si


def _plane_points(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """(A, S) positions in mm of a mask's voxels (all slices together)."""
    _, a, s = np.nonzero(mask)
    return np.stack([a * spacing[1], s * spacing[2]], axis=1)


@dataclass(frozen=True)
class LesionMeasure:
    """What :func:`measure_lesion` found (JSON-safe through :meth:`to_json`).

    Attributes:
        direction: +1 brighter, -1 darker, 0 no lesion found.
        peak_change: 95th percentile of ``|r_s|`` in the candidate region (relative to the marrow).
        mean_change: mean signed ``r`` in the lesion region.
        size_mm: largest in-plane diameter of the lesion region, mm.
        position_ap, position_si: the location words of its centroid; None without a lesion.
        slices: the sagittal slice indices the region reaches.
        extent_mm: ``len(slices)`` times the slice spacing.
        neighbour_correlation: :func:`neighbour_correlation` over those slices and one more on each side.
        in_body_mean_change: mean ``r`` over the whole body (every slice).
    """

    direction: int
    peak_change: float = 0.0
    mean_change: float = 0.0
    size_mm: float = 0.0
    position_ap: str | None = None
    position_si: str | None = None
    slices: list[int] = field(default_factory=list)
    extent_mm: float = 0.0
    neighbour_correlation: float | None = None
    in_body_mean_change: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def _spacing(spacing, ndim: int = 3) -> np.ndarray:
    spacing = np.asarray(spacing, np.float64)
    if spacing.shape != (ndim,) or not np.all(spacing > 0):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm), got {spacing.tolist()}")
    return spacing


def relative_change(before: np.ndarray, after: np.ndarray, marrow: np.ndarray) -> np.ndarray:
    """``(after - before) / m``, ``m`` the median of ``before`` in ``marrow`` (the marrow's signal)."""
    level = float(np.median(before[marrow]))
    if not np.isfinite(level) or level <= 0:
        raise ValueError(f"the marrow signal (median in the vertebral body) must be positive, got {level}")
    return (np.asarray(after, np.float64) - np.asarray(before, np.float64)) / level


def smooth_in_plane(change: np.ndarray, spacing: np.ndarray, sigma_mm: float = SMOOTH_MM) -> np.ndarray:
    """Gaussian smoothing of each sagittal slice (axis 0 untouched), ``sigma_mm`` in mm."""
    return ndimage.gaussian_filter(change, sigma=(0.0, *(sigma_mm / spacing[1:])))


def in_plane_diameter(region: np.ndarray, spacing: np.ndarray) -> float:
    """Largest distance between two pixel centres of ``region`` within one slice, plus one pixel, mm."""
    largest = 0.0
    for index in np.nonzero(region.any(axis=(1, 2)))[0]:
        points = np.argwhere(region[index]) * spacing[1:]
        if len(points) > 1:
            largest = max(largest, float(pdist(points).max()))
    return largest + float(spacing[1:].mean())


def neighbour_correlation(change: np.ndarray, mask: np.ndarray, slices: list[int] | None = None) -> float | None:
    """Mean Pearson correlation of ``change`` between neighbouring sagittal slices inside ``mask``.

    Over ``slices`` (default every slice) and one more on each side, pairs with at least 10 shared mask pixels; a
    pair where one side does not vary at all (an unchanged neighbour) counts 0: the change stops abruptly. None
    when no pair qualifies.
    """
    if slices is not None and len(slices) == 0:
        return None
    first = 0 if slices is None else max(min(slices) - 1, 0)
    last = change.shape[0] - 1 if slices is None else min(max(slices) + 1, change.shape[0] - 1)
    values = []
    for k in range(first, last):
        shared = mask[k] & mask[k + 1]
        if shared.sum() < 10:
            continue
        a, b = change[k][shared], change[k + 1][shared]
        values.append(0.0 if a.std() < 1e-9 or b.std() < 1e-9 else float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(values)) if values else None


def measure_lesion(before: np.ndarray, after: np.ndarray, vertebra: np.ndarray, spacing) -> LesionMeasure:
    """The measure of the module docstring for one case.

    Args:
        before, after: ``(X, A, S)`` volumes (a 2-D slice: ``X = 1``) in any intensity unit with background 0.
        vertebra: the vertebra's mask, same shape.
        spacing: voxel size along the three axes, mm.
    """
    spacing = _spacing(spacing)
    if np.shape(before) != np.shape(after) or np.shape(before) != np.shape(vertebra):
        raise ValueError(f"before {np.shape(before)}, after {np.shape(after)} and mask {np.shape(vertebra)} differ")
    if not np.any(vertebra):
        raise ValueError("the vertebra mask is empty; no lesion can be measured")
    body = vertebral_body(vertebra, spacing)
    marrow = marrow_region(body, spacing)  # one slice: in-plane only
    change = relative_change(before, after, marrow)
    smooth = smooth_in_plane(change, spacing)
    in_body = float(change[body].mean())
    magnitude = np.where(marrow, np.abs(smooth), 0.0)
    regions, count = ndimage.label(magnitude > ABS_THRESHOLD, _STRUCTURE)
    if count == 0:
        return LesionMeasure(0, in_body_mean_change=in_body)
    index = range(1, count + 1)
    pixel_area = float(spacing[1] * spacing[2])
    voxels = ndimage.sum_labels(np.ones(regions.shape), regions, index=index)
    masses = np.where(voxels * pixel_area >= MIN_AREA_MM2, ndimage.sum_labels(magnitude, regions, index=index), 0)
    if not masses.any():
        return LesionMeasure(0, in_body_mean_change=in_body)
    candidate = regions == 1 + int(np.argmax(masses))
    sign = 1 if smooth[candidate].sum() > 0 else -1
    signed = np.where(marrow, sign * smooth, 0.0)
    peak = float(np.percentile(signed[candidate], 95))
    strongest = np.unravel_index(np.argmax(np.where(candidate, signed, -np.inf)), signed.shape)
    half, _ = ndimage.label(signed >= max(ABS_THRESHOLD, HALF * peak), _STRUCTURE)
    lesion = half == half[strongest]
    frame = BodyFrame.of(body, spacing)
    position_ap, position_si = frame.position_words(body, spacing, _plane_points(lesion, spacing).mean(axis=0))
    slices = np.nonzero(lesion.any(axis=(1, 2)))[0].tolist()
    return LesionMeasure(
        direction=sign,
        peak_change=peak,
        mean_change=float(change[lesion].mean()),
        size_mm=in_plane_diameter(lesion, spacing),
        position_ap=position_ap,
        position_si=position_si,
        slices=slices,
        extent_mm=len(slices) * float(spacing[0]),
        neighbour_correlation=neighbour_correlation(smooth, body, slices),
        in_body_mean_change=in_body,
    )
