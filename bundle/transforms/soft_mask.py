"""The soft mask M_b of MedSoft-Diffusion (paper eq. 1-2) and the masked image I_m = x0 * (1 - M_b).

A binary mask M comes from one of three sources, all on the image's voxel grid ``(1, X, Y, Z)``:

- a segmentation and a set of label values (e.g. a vertebra: ``mask_labels=[30]`` is L2 in TotalSegmentator
  numbering);
- a box given by two corners, in voxel indices of the loaded volume or in world RAS millimetres;
- a point plus a box size in millimetres (the RSNA style: a lesion coordinate with a box around it).

``M_b = G_sigma * M`` is a Gaussian blur whose sigma is given in millimetres and converted per axis with the
voxel spacing, so the same sigma gives the same physical profile at any resolution. Values lie in [0, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import GaussianSmooth, MapTransform, Transform

from bundle.errors import InputError
from bundle.transforms.loading import voxel_spacing_mm

CoordinateSpace = Literal["voxel", "world"]


def _source_name(volume: MetaTensor) -> str:
    return str(volume.meta.get("filename_or_obj", "<volume>"))


def _as_mask(reference: MetaTensor, inside: torch.Tensor) -> MetaTensor:
    """A float32 0/1 ``MetaTensor`` with ``reference``'s affine and metadata."""
    meta = {k: v for k, v in reference.meta.items() if k != "affine"}
    return MetaTensor(inside.to(torch.float32), affine=reference.affine.clone(), meta=meta)


class LabelMask(Transform):
    """Binary mask of the voxels of ``segmentation`` whose value is one of ``labels``.

    Args:
        labels: label values to include (segmentations stored as float are compared after rounding).

    Input ``(1, X, Y, Z)`` segmentation; output ``(1, X, Y, Z)`` float32 in {0, 1}.
    """

    def __init__(self, labels: Sequence[int]) -> None:
        if len(labels) == 0:
            raise ValueError("LabelMask needs at least one label value")
        self.labels = [int(v) for v in labels]

    def __call__(self, segmentation: MetaTensor) -> MetaTensor:
        values = torch.round(torch.as_tensor(segmentation)).to(torch.int64)
        inside = torch.isin(values, torch.tensor(self.labels))
        if not inside.any():
            present = sorted(int(v) for v in torch.unique(values).tolist() if v != 0)[:20]
            raise InputError(
                _source_name(segmentation),
                f"empty mask: none of the labels {self.labels} is present (labels found: {present})",
            )
        return _as_mask(segmentation, inside)


def voxel_centres_world(shape: Sequence[int], affine: np.ndarray) -> torch.Tensor:
    """World (RAS mm) coordinates of every voxel centre: tensor ``(X, Y, Z, 3)``."""
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    voxels = torch.stack(grids, dim=-1)
    matrix = torch.as_tensor(np.asarray(affine, float))
    return voxels @ matrix[:3, :3].T + matrix[:3, 3]


def box_mask(
    reference: MetaTensor, lower: Sequence[float], upper: Sequence[float], space: CoordinateSpace = "voxel"
) -> MetaTensor:
    """Mask of the voxels whose centre lies in the box ``[lower, upper]`` (inclusive, per axis).

    Args:
        reference: volume ``(1, X, Y, Z)`` defining the grid.
        lower, upper: opposite corners; voxel indices of ``reference`` (``space="voxel"``) or RAS mm
            (``space="world"``; the box is axis-aligned in world space, so on an oblique grid it is not a
            voxel-aligned block).
    """
    lower_t = torch.as_tensor(np.minimum(lower, upper), dtype=torch.float64)
    upper_t = torch.as_tensor(np.maximum(lower, upper), dtype=torch.float64)
    if lower_t.numel() != 3:
        raise InputError(_source_name(reference), f"a box needs two 3-D corners, got {list(lower)} and {list(upper)}")
    shape = tuple(reference.shape[1:])
    if space == "voxel":
        coordinates = torch.stack(
            torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"), dim=-1
        )
    elif space == "world":
        coordinates = voxel_centres_world(shape, np.asarray(reference.affine, float))
    else:
        raise ValueError(f"coordinate space must be 'voxel' or 'world', got {space!r}")
    inside = ((coordinates >= lower_t) & (coordinates <= upper_t)).all(dim=-1)[None]
    if not inside.any():
        raise InputError(
            _source_name(reference),
            f"empty mask: the {space} box {lower_t.tolist()} .. {upper_t.tolist()} "
            f"contains no voxel of the {shape} grid",
        )
    return _as_mask(reference, inside)


class BoxMask(Transform):
    """Binary mask of a box given by two corners (see :func:`box_mask`); output ``(1, X, Y, Z)`` float32."""

    def __init__(self, space: CoordinateSpace = "voxel") -> None:
        self.space = space

    def __call__(self, reference: MetaTensor, box: Sequence[Sequence[float]]) -> MetaTensor:
        lower, upper = box
        return box_mask(reference, lower, upper, self.space)


class PointBoxMask(Transform):
    """Binary mask of a box of ``size_mm`` centred on a point (the RSNA style).

    Args:
        size_mm: box edge lengths in mm, one per axis (or one number for a cube). In voxel space the axes
            are the volume's voxel axes; in world space they are the R, A, S axes.
        space: whether points are voxel indices of the loaded volume or RAS mm.
    """

    def __init__(self, size_mm: Sequence[float] | float, space: CoordinateSpace = "voxel") -> None:
        self.size_mm = np.broadcast_to(np.asarray(size_mm, dtype=float), (3,)).copy()
        if (self.size_mm <= 0).any():
            raise ValueError(f"box size must be positive in mm, got {self.size_mm.tolist()}")
        self.space = space

    def __call__(self, reference: MetaTensor, point: Sequence[float]) -> MetaTensor:
        point = np.asarray(point, dtype=float)
        if point.shape != (3,):
            raise InputError(_source_name(reference), f"a point needs 3 coordinates, got {point.tolist()}")
        half = self.size_mm / 2.0
        if self.space == "voxel":
            half = half / voxel_spacing_mm(reference.affine)
        return box_mask(reference, point - half, point + half, self.space)


class GaussianBlurMM(Transform):
    """``M_b = G_sigma * M`` with sigma in millimetres, converted to voxels per axis from the affine.

    Input and output ``(1, X, Y, Z)``; output float32 clipped to [0, 1]. The result is MONAI's separable
    ``GaussianSmooth`` (its "erf" kernel, truncated at 4 sigma, zero outside the volume). ``sigma_mm=0`` is no
    blur. It is computed on the mask's support only (grown by the kernel's tail), one axis at a time as a
    product with the kernel's banded matrix: the same values up to float rounding (every voxel farther than
    the tail from the mask is 0 either way), in a fraction of the time of a convolution over the whole volume
    (see ``docs/performance.md``).
    """

    def __init__(self, sigma_mm: Sequence[float] | float) -> None:
        self.sigma_mm = np.broadcast_to(np.asarray(sigma_mm, dtype=float), (3,)).copy()
        if (self.sigma_mm < 0).any():
            raise ValueError(f"sigma must be >= 0 mm, got {self.sigma_mm.tolist()}")

    def __call__(self, mask: MetaTensor) -> MetaTensor:
        sigma_voxels = self.sigma_mm / voxel_spacing_mm(mask.affine)
        mask = mask.to(torch.float32)
        if mask.ndim != 4:
            return GaussianSmooth(sigma=sigma_voxels.tolist())(mask).clamp_(0.0, 1.0)
        return _gaussian_on_support(mask, sigma_voxels)

    def crop(self, mask: MetaTensor) -> tuple[slice, ...] | None:
        """The part of a ``(C, X, Y, Z)`` mask the blur computes on: the box of its non-zero voxels grown by each
        axis's kernel tail, clipped to the volume (``None``: no non-zero voxel)."""
        kernels = [_gaussian_kernel(float(s)) for s in self.sigma_mm / voxel_spacing_mm(mask.affine)]
        return _support_crop(torch.as_tensor(mask.to(torch.float32)).detach(), kernels)


def _gaussian_on_support(mask: MetaTensor, sigma_voxels: Sequence[float]) -> MetaTensor:
    """MONAI's ``GaussianSmooth(sigma_voxels)`` of a float32 ``(C, X, Y, Z)`` mask, clipped to [0, 1], computed
    on the crop of its non-zero voxels grown by each axis's kernel tail (clipped to the volume, where zero
    padding starts anyway). Outside the crop nothing is computed: the volume is read once to find the support
    and the output starts as lazily zeroed memory, so the work is the crop's, not the volume's."""
    kernels = [_gaussian_kernel(float(s)) for s in sigma_voxels]
    if all(kernel is None for kernel in kernels):
        return mask.clone().clamp_(0.0, 1.0)
    values = (mask.as_tensor() if isinstance(mask, MetaTensor) else mask).detach()
    out = _zeros_like(mask)
    crop = _support_crop(values, kernels)
    if crop is None:
        return out
    block = values[crop]
    for axis, kernel in enumerate(kernels, start=1):
        if kernel is not None:
            block = _correlate_along(block, kernel.to(block), axis)
    (out.as_tensor() if isinstance(out, MetaTensor) else out)[crop] = block.clamp_(0.0, 1.0)
    return out


@functools.lru_cache(maxsize=64)
def _gaussian_kernel(sigma_voxels: float) -> torch.Tensor | None:
    """MONAI's 1-D "erf" kernel truncated at 4 sigma (``GaussianSmooth``'s); ``None`` where it is the identity
    ``[0, 1, 0]`` (sigma 0). Cached: the same sigma recurs for every mask of a series."""
    from monai.networks.layers.convutils import gaussian_1d

    kernel = gaussian_1d(torch.tensor(sigma_voxels), truncated=4.0, approx="erf")
    return None if float(kernel[len(kernel) // 2]) == 1.0 and float(kernel.sum()) == 1.0 else kernel


def _zeros_like(mask: torch.Tensor) -> torch.Tensor:
    """Zeros shaped and placed like ``mask``, with its metadata. On the CPU from ``calloc`` (numpy), whose
    pages the system zeroes when first touched instead of a write pass over the whole volume here."""
    if mask.device.type != "cpu":
        return torch.zeros_like(mask)
    zeros = torch.from_numpy(np.zeros(tuple(mask.shape), dtype=np.float32))
    if not isinstance(mask, MetaTensor):
        return zeros
    out = MetaTensor(zeros)
    out.copy_meta_from(mask)
    return out


_NOT_SIGN = np.uint32(0x7FFFFFFF)


def _support_crop(values: torch.Tensor, kernels: Sequence[torch.Tensor | None]) -> tuple[slice, ...] | None:
    """``(C, X, Y, Z)`` index of the non-zero voxels' box grown by each axis's kernel tail, clipped to the volume."""
    support = _support_box(values)
    if support is None:
        return None
    tails = [0 if kernel is None else len(kernel) // 2 for kernel in kernels]
    return (slice(None),) + tuple(
        slice(max(first - tail, 0), min(last + tail + 1, size))
        for (first, last), tail, size in zip(support, tails, values.shape[1:], strict=True)
    )


def _support_box(values: torch.Tensor) -> list[tuple[int, int]] | None:
    """First and last index of the non-zero voxels along each spatial axis of a float32 ``(C, X, Y, Z)`` tensor
    (``None`` when all are zero). The volume is read once, its bits OR-ed over the rows into a ``(Y, Z)`` plane
    (a float is non-zero, NaN included, when a bit other than the sign is set); the X range then reads only the
    rows inside the plane's box."""
    if values.device.type == "cpu":
        bits = values.contiguous().numpy().view(np.uint32)
    else:  # compare on the device, bring only the 0/1 bytes over
        bits = (values != 0).cpu().numpy().view(np.uint8)
    plane = (np.bitwise_or.reduce(bits, axis=(0, 1)) & _NOT_SIGN) != 0
    if not plane.any():
        return None
    y, z = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    rows = bits[:, :, y[0] : y[-1] + 1, z[0] : z[-1] + 1]
    x = np.flatnonzero((np.bitwise_or.reduce(rows, axis=(0, 2, 3)) & _NOT_SIGN) != 0)
    return [(int(a[0]), int(a[-1])) for a in (x, y, z)]


def _correlate_along(values: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """``values`` correlated with the odd ``kernel`` along ``axis``, zero outside: products with the banded
    (Toeplitz) matrix of the kernel, one block of output rows at a time so only the band is multiplied."""
    size, tail = values.shape[axis], len(kernel) // 2
    offsets = torch.arange(size, device=values.device)[None, :] - torch.arange(size, device=values.device)[:, None]
    inside = offsets.abs() <= tail
    band = torch.where(inside, kernel[(offsets + tail).clamp(0, len(kernel) - 1)], kernel.new_zeros(()))
    out = torch.empty_like(values)
    step = max(32, 2 * tail)
    for first in range(0, size, step):
        last = min(size, first + step)
        low, high = max(0, first - tail), min(size, last + tail)
        part = band[first:last, low:high]
        if axis == values.ndim - 1:
            out[..., first:last] = values[..., low:high] @ part.T
        else:
            window = values.narrow(axis, low, high - low).movedim(axis, -2)
            out.narrow(axis, first, last - first).copy_(torch.matmul(part, window).movedim(-2, axis))
    return out


class MaskImage(Transform):
    """The masked image ``I_m = x0 * (1 - M_b)`` (paper eq. 2); shapes as the inputs, which must match."""

    def __call__(self, image: torch.Tensor, soft_mask: torch.Tensor) -> torch.Tensor:
        return image * (1.0 - soft_mask)


class _Twind(MapTransform):
    """The shared body of the dictionary twins: ``d[output_key] = transform(d[key], *(d[k] for k in inputs))``."""

    def __init__(
        self,
        keys: KeysCollection,
        transform: Transform,
        output_key: str,
        inputs: Sequence[str] = (),
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.transform = transform
        self.output_key = output_key
        self.inputs = list(inputs)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key], *(d[k] for k in self.inputs))
        return d


class LabelMaskd(_Twind):
    """Dictionary twin of :class:`LabelMask`: ``d[output_key] = LabelMask(labels)(d[key])``."""

    def __init__(
        self, keys: KeysCollection, labels: Sequence[int], output_key: str = "mask", allow_missing_keys: bool = False
    ):
        super().__init__(keys, LabelMask(labels), output_key, (), allow_missing_keys)


class BoxMaskd(_Twind):
    """Dictionary twin of :class:`BoxMask`: the box is read from ``d[box_key]`` on the grid of ``d[key]``."""

    def __init__(
        self,
        keys: KeysCollection,
        box_key: str = "box",
        output_key: str = "mask",
        space: CoordinateSpace = "voxel",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, BoxMask(space), output_key, (box_key,), allow_missing_keys)


class PointBoxMaskd(_Twind):
    """Dictionary twin of :class:`PointBoxMask`: the point is read from ``d[point_key]``."""

    def __init__(
        self,
        keys: KeysCollection,
        size_mm: Sequence[float] | float,
        point_key: str = "point",
        output_key: str = "mask",
        space: CoordinateSpace = "voxel",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, PointBoxMask(size_mm, space), output_key, (point_key,), allow_missing_keys)


class GaussianBlurMMd(_Twind):
    """Dictionary twin of :class:`GaussianBlurMM`: ``d[output_key] = blur(d[key])``."""

    def __init__(
        self,
        keys: KeysCollection,
        sigma_mm: Sequence[float] | float,
        output_key: str = "soft_mask",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, GaussianBlurMM(sigma_mm), output_key, (), allow_missing_keys)


class MaskImaged(_Twind):
    """Dictionary twin of :class:`MaskImage`: ``d[output_key] = d[key] * (1 - d[soft_mask_key])``."""

    def __init__(
        self,
        keys: KeysCollection,
        soft_mask_key: str = "soft_mask",
        output_key: str = "masked_image",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, MaskImage(), output_key, (soft_mask_key,), allow_missing_keys)


class SoftMaskFromSourced(MapTransform):
    """Make ``d["mask"]`` and ``d["soft_mask"]`` from whichever mask source a datalist entry gives.

    The entry names its source with one of (checked in this order):

    - ``"box": [[x0, y0, z0], [x1, y1, z1]]``;
    - ``"point": [x, y, z]`` with optional ``"box_size_mm"`` (default ``default_box_size_mm``);
    - ``seg_key`` (a loaded segmentation) with ``"mask_labels": [...]``.

    ``"coordinate_space"`` (``"voxel"``, default, or ``"world"`` for RAS mm) says how box and point are given.
    A JSON-safe description of the source is stored in ``d["mask_source"]`` for the provenance record.

    A soft mask with less than ``min_body_fraction`` of its weight inside the body (e.g. a box in the air
    around the patient) is refused (:func:`require_mask_in_body`); 0 turns the check off.
    """

    def __init__(
        self,
        image_key: str = "image",
        seg_key: str = "vertebra_seg",
        sigma_mm: float = 3.0,
        default_box_size_mm: Sequence[float] | float = 30.0,
        mask_key: str = "mask",
        soft_mask_key: str = "soft_mask",
        min_body_fraction: float = 0.1,
    ):
        super().__init__([image_key], allow_missing_keys=False)
        self.min_body_fraction = min_body_fraction
        self.image_key = image_key
        self.seg_key = seg_key
        self.sigma_mm = sigma_mm
        self.default_box_size_mm = default_box_size_mm
        self.mask_key = mask_key
        self.soft_mask_key = soft_mask_key
        self.blur = GaussianBlurMM(sigma_mm)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        image = d[self.image_key]
        space = d.get("coordinate_space", "voxel")
        if d.get("box") is not None:
            mask = BoxMask(space)(image, d["box"])
            source = {"type": "box", "box": np.asarray(d["box"], float).tolist(), "space": space}
        elif d.get("point") is not None:
            size = d.get("box_size_mm", self.default_box_size_mm)
            mask = PointBoxMask(size, space)(image, d["point"])
            source = {
                "type": "point",
                "point": np.asarray(d["point"], float).tolist(),
                "box_size_mm": np.broadcast_to(np.asarray(size, float), (3,)).tolist(),
                "space": space,
            }
        elif d.get(self.seg_key) is not None and d.get("mask_labels"):
            segmentation = d[self.seg_key]
            mask = LabelMask(d["mask_labels"])(segmentation)
            source = {
                "type": "segmentation",
                "file": str(segmentation.meta.get("filename_or_obj")),
                "labels": [int(v) for v in d["mask_labels"]],
            }
        else:
            raise InputError(
                d.get("case_id", image.meta.get("filename_or_obj")),
                f"no soft-mask source: give 'box', 'point', or '{self.seg_key}' with 'mask_labels'",
            )
        source["sigma_mm"] = float(self.sigma_mm)
        d[self.mask_key] = mask
        d[self.soft_mask_key] = self.blur(mask)
        d["mask_source"] = source
        if self.min_body_fraction > 0:
            named = source["file"] if source["type"] == "segmentation" else d.get("case_id", _source_name(image))
            require_mask_in_body(image, d[self.soft_mask_key], self.min_body_fraction, named, source)
        return d


class LesionMaskd(MapTransform):
    """``d[output_key]``: the lesion's own binary mask (``lesion_seg > 0``) on the mask's voxel grid.

    An entry without a lesion segmentation (``lesion_key`` absent or ``None``: normal cases, datasets that
    give only a class and a text) gets an all-zero mask: every slice item then has the same keys, so a batch
    collates, and zero says "no lesion voxel marked". Whether that means "no lesion" is the dataset's claim;
    ``d["has_lesion_mask"]`` records which entries had a segmentation. Input ``(1, X, Y, Z)`` (the lesion
    segmentation already on the image's grid, :class:`bundle.transforms.loading.MatchImageGridd`); output
    ``(1, X, Y, Z)`` float32 in {0, 1} with ``mask_key``'s affine.
    """

    def __init__(self, lesion_key: str = "lesion_seg", mask_key: str = "mask", output_key: str = "lesion_mask"):
        super().__init__([mask_key], allow_missing_keys=False)
        self.lesion_key, self.mask_key, self.output_key = lesion_key, mask_key, output_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        mask = d[self.mask_key]
        lesion = d.get(self.lesion_key)
        if isinstance(lesion, torch.Tensor):
            if lesion.shape != mask.shape:
                raise InputError(
                    _source_name(lesion),
                    f"the lesion segmentation's shape {tuple(lesion.shape)} differs from the mask's "
                    f"{tuple(mask.shape)}",
                )
            inside = torch.as_tensor(lesion) > 0
        else:
            inside = torch.zeros_like(torch.as_tensor(mask), dtype=torch.bool)
        d[self.output_key] = _as_mask(mask, inside)
        d["has_lesion_mask"] = isinstance(lesion, torch.Tensor)
        return d


BODY_LEVEL = 0.05
_BODY_SAMPLE = 2**20


def body_fraction(image: torch.Tensor, soft_mask: torch.Tensor, body_level: float = BODY_LEVEL) -> tuple[float, float]:
    """The fraction of ``soft_mask``'s weight on body voxels of ``image``, and the intensity threshold used.

    Body voxels are those brighter than ``low + body_level * (high - low)``, with ``low`` and ``high`` the 1st
    and 99th percentiles of the voxels above the image's minimum (so zero padding and CT's out-of-field value
    do not set the background level; about 2**20 evenly strided voxels are used). Air (MRI noise, CT
    -1000 HU) lies below it; dark tissue mostly above. A constant image counts as all body.
    """
    values = torch.as_tensor(image).detach().flatten()
    minimum = float(values.min())
    sample = values[:: max(1, values.numel() // _BODY_SAMPLE)].to(torch.float64).numpy()
    above = sample[sample > minimum]
    if above.size == 0:
        return 1.0, minimum
    low, high = np.percentile(above, [1.0, 99.0])
    threshold = float(low + body_level * (high - low))
    weight = torch.as_tensor(soft_mask).detach().to(torch.float64)
    total = float(weight.sum())
    if total <= 0:
        return 0.0, threshold
    inside = float((weight * (torch.as_tensor(image).detach() > threshold)).sum())
    return inside / total, threshold


def require_mask_in_body(
    image: MetaTensor,
    soft_mask: torch.Tensor,
    min_fraction: float = 0.1,
    source: str | None = None,
    description: Mapping[str, object] | None = None,
) -> float:
    """Raise :class:`InputError` naming ``source`` when less than ``min_fraction`` of the soft mask's weight lies
    in the body (:func:`body_fraction`), e.g. a box or point placed in the air; returns the fraction."""
    fraction, threshold = body_fraction(image, soft_mask)
    if fraction < min_fraction:
        kind = (description or {}).get("type", "mask")
        hint = (
            f"check the {kind} coordinates and 'coordinate_space' ({(description or {}).get('space')})"
            if kind in ("box", "point")
            else "check the labels and that the segmentation belongs to this image"
        )
        raise InputError(
            source or _source_name(image),
            f"the soft mask lies outside the body: {fraction:.1%} of its weight is on body voxels "
            f"(brighter than {threshold:.4g} in {_source_name(image)}), at least {min_fraction:.0%} "
            f"is needed; {hint}",
        )
    return fraction
