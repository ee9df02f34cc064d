"""Random training transforms of the downstream classifier's slice inputs."""

from __future__ import annotations

import math

from monai.transforms import Compose


def augmentation(
    rotate_degrees: float = 10.0,
    scale: float = 0.1,
    shift_pixels: float = 3.0,
    intensity: float = 0.1,
    flip: bool = True,
    seed: int = 0,
) -> Compose:
    """Random training transforms of a ``(C, S, S)`` input: an up-down flip (the sagittal slice's
    superior-inferior axis), a small rotation, scaling and shift, and an intensity scale of the first channel
    (the slice). Cheap on the small model grid. Seeded: the same ``seed`` draws the same transforms."""
    from monai.transforms import RandAffine, RandFlip, RandScaleIntensity

    transforms = [RandFlip(prob=0.5, spatial_axis=0)] if flip else []
    transforms.append(
        RandAffine(
            prob=1.0,
            rotate_range=math.radians(rotate_degrees),
            scale_range=scale,
            translate_range=(shift_pixels, shift_pixels),
            padding_mode="zeros",
        )
    )
    transforms.append(RandScaleIntensity(factors=intensity, prob=1.0, channel_wise=True))
    return Compose(transforms).set_random_state(seed=int(seed))
