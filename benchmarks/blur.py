"""Item 4: the soft-mask blur (:class:`bundle.transforms.soft_mask.GaussianBlurMM`) on a 512 x 512 x 64
anisotropic volume against ``scipy.ndimage.gaussian_filter`` at the same sigma (in voxels), zero outside the volume.

Two masks: a vertebra-sized box (the masks the bundle makes: a vertebra, a box, a point's box) and a worst
case whose non-zero voxels span the whole volume (two opposite corners set), where computing on the support
saves nothing. Ours is always the whole transform (find the mask's support, blur the support grown by the
kernel's tail, return the full-size volume). For the box, scipy runs on the same crop (like for like; scipy is
given the crop, so it neither searches for it nor fills a full-size output) and, as a separate row that is
not like for like, on the whole volume. The maximum absolute difference to scipy is reported (MONAI's "erf"
kernel integrates the Gaussian over each voxel, scipy samples it), and to MONAI's ``GaussianSmooth`` on the
full volume, which is what ``GaussianBlurMM`` computed before and must still give.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import GaussianSmooth
from scipy import ndimage

from benchmarks.common import Context, Record, compare, interleaved, median, spread
from bundle.transforms.loading import voxel_spacing_mm
from bundle.transforms.soft_mask import GaussianBlurMM

SHAPE = (512, 512, 64)
SPACING_MM = (0.5, 0.5, 3.0)
SIGMA_MM = 3.0  # the configs' soft_mask_sigma_mm
SCIPY = "scipy.ndimage.gaussian_filter (same sigma in voxels, truncate 4.0, mode 'constant' = zero outside)"


def volume(kind: str) -> MetaTensor:
    mask = torch.zeros((1, *SHAPE), dtype=torch.float32)
    box = [
        slice(round(n * low), round(n * high))
        for n, (low, high) in zip(SHAPE, ((0.42, 0.58), (0.44, 0.56), (0.44, 0.56)), strict=True)
    ]
    mask[(0, *box)] = 1.0  # at 512 x 512 x 64: 41 x 31 x 21 mm, a vertebral body
    if kind == "dense":
        mask[0, 0, 0, 0] = mask[0, -1, -1, -1] = 1.0  # support = the whole volume
    return MetaTensor(mask, affine=torch.diag(torch.tensor([*SPACING_MM, 1.0], dtype=torch.float64)))


def scipy_blur(array: np.ndarray, sigma_voxels: np.ndarray) -> np.ndarray:
    return np.clip(ndimage.gaussian_filter(array, sigma_voxels, mode="constant", cval=0.0, truncate=4.0), 0, 1)


def run(ctx: Context) -> list[Record]:
    blur = GaussianBlurMM(SIGMA_MM)
    repeats = 3 if ctx.quick else 7
    records = []
    for kind in ("box", "dense"):
        mask = volume(kind)
        sigma_voxels = blur.sigma_mm / voxel_spacing_mm(mask.affine)
        crop = blur.crop(mask)
        whole = mask[0].numpy()
        cropped = np.ascontiguousarray(mask.as_tensor()[crop][0].numpy())
        candidates = {"ours": lambda mask=mask: blur(mask)}
        if kind == "box":
            on_crop = MetaTensor(torch.from_numpy(cropped)[None], affine=mask.affine)
            candidates["ours_crop"] = lambda m=on_crop: blur(m)
            candidates["scipy_crop"] = lambda a=cropped, s=sigma_voxels: scipy_blur(a, s)
            # where ours' time goes: finding the support is one read of the whole volume
            candidates["crop_search"] = lambda mask=mask: blur.crop(mask)
        candidates["scipy_volume"] = lambda a=whole, s=sigma_voxels: scipy_blur(a, s)
        times = interleaved(candidates, repeats=repeats)
        result = blur(mask)[0].numpy()
        crop_shape = "x".join(str(s.stop - s.start) for s in crop[1:])
        shape = (
            f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} float32, spacing {SPACING_MM} mm, sigma {SIGMA_MM} mm = "
            f"{tuple(round(float(s), 2) for s in sigma_voxels)} voxels; crop (support grown by the kernel tail) "
            f"{crop_shape}"
        )
        monai_full = GaussianSmooth(sigma=sigma_voxels.tolist())(mask).clamp_(0.0, 1.0)[0].numpy()
        extra = {
            "max_abs_diff_vs_scipy": float(np.abs(result - scipy_blur(whole, sigma_voxels)).max()),
            "max_abs_diff_vs_monai_gaussiansmooth": float(np.abs(result - monai_full).max()),
            "crop": crop_shape,
        }
        accuracy = (
            f"max |ours - scipy| = {extra['max_abs_diff_vs_scipy']:.2e} (MONAI's erf kernel vs scipy's sampled "
            f"one); max |ours - MONAI GaussianSmooth on the full volume| = "
            f"{extra['max_abs_diff_vs_monai_gaussiansmooth']:.1e}"
        )
        if kind == "box":
            search = median(times["crop_search"])
            records.append(
                compare(
                    "soft-mask blur, vertebra-sized box mask: both on the same crop",
                    4,
                    times["ours_crop"],
                    times["scipy_crop"],
                    SCIPY + ", on the same crop array",
                    "<= 1.0",
                    1.0,
                    shape,
                    "like for like: both are given the crop (the support grown by the kernel tail) and return "
                    "its blur; the same rounds as the rows below",
                )
            )
            records.append(
                compare(
                    "soft-mask blur, vertebra-sized box mask: ours on the whole volume vs scipy on the crop",
                    4,
                    times["ours"],
                    times["scipy_crop"],
                    SCIPY + ", on the crop ours computes (given to it: no search, no full-size output)",
                    "<= 1.0",
                    1.0,
                    shape,
                    f"ours is the whole transform: it finds the crop (one read of the whole 64 MiB volume, the "
                    f"floor of any search: median {search * 1e3:.1f} ms, spread {spread_ms(times['crop_search'])} "
                    f"in the same rounds), blurs it and returns the full-size volume; {accuracy}",
                    crop_search_s=times["crop_search"],
                    **extra,
                )
            )
            records.append(
                compare(
                    "soft-mask blur, vertebra-sized box mask, vs scipy on the whole volume (not like for like)",
                    4,
                    times["ours"],
                    times["scipy_volume"],
                    SCIPY + ", on the whole volume",
                    "none (not like for like: scipy filters every voxel, ours the crop)",
                    None,
                    shape,
                    "what a user of scipy.ndimage would run on the whole mask; the same rounds as the row above",
                )
            )
        else:
            records.append(
                compare(
                    "soft-mask blur, worst case: support spans the volume, vs scipy on the whole volume",
                    4,
                    times["ours"],
                    times["scipy_volume"],
                    SCIPY + ", on the whole volume (= the crop here)",
                    "<= 1.0",
                    1.0,
                    shape,
                    "like for like: the crop is the whole volume; the gain is the banded-matrix products (BLAS) "
                    f"against scipy's per-line loops in float64; {accuracy}",
                    **extra,
                )
            )
    records.append(previous_blur(ctx))
    return records


def spread_ms(values) -> str:
    low, middle, high = spread(values)
    return f"[{low * 1e3:.1f}, {middle * 1e3:.1f}, {high * 1e3:.1f}] ms"


def previous_blur(ctx: Context) -> Record:
    """What ``GaussianBlurMM`` ran before the crop: MONAI's ``GaussianSmooth`` (torch conv1d passes over every
    voxel) on the box mask, against scipy on the whole volume (like for like: both filter every voxel)."""
    mask = volume("box")
    sigma_voxels = GaussianBlurMM(SIGMA_MM).sigma_mm / voxel_spacing_mm(mask.affine)
    whole = mask[0].numpy()
    times = interleaved(
        {
            "monai": lambda: GaussianSmooth(sigma=sigma_voxels.tolist())(mask),
            "reference": lambda: scipy_blur(whole, sigma_voxels),
        },
        repeats=1 if ctx.quick else 3,
    )
    return compare(
        "previous blur (MONAI GaussianSmooth, full volume), vs scipy on the whole volume",
        4,
        times["monai"],
        times["reference"],
        SCIPY + ", on the whole volume",
        "none (the replaced implementation, for the record)",
        None,
        f"{SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} float32, the box mask, sigma {SIGMA_MM} mm",
        "what GaussianBlurMM ran before the support crop (torch conv1d passes over every voxel)",
    )
