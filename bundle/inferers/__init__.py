"""MONAI inferers: classifier-free guided sampling of a conditioned diffusion model with a per-step hook, and
MedSoft-Diffusion's sampling of a lesion into the soft-masked region (a blend at every step), optionally with
MedDiff-FT's dynamic guiding mask (the blended region scheduled over the steps) and its inpainting model's sampler."""

from bundle.inferers.guide_mask import FirstGuideMasks, GuideMaskSchedule
from bundle.inferers.guided_inpainting import GuidedInpaintingInferer
from bundle.inferers.guided_sampler import GuidedSampler, noise_like, seeded_generators
from bundle.inferers.samplers import SAMPLERS, sampling_scheduler
from bundle.inferers.soft_mask_inpainting import PredictedX0Blend, SoftMaskBlend, SoftMaskInpaintingInferer

__all__ = [
    "FirstGuideMasks",
    "GuidedInpaintingInferer",
    "GuideMaskSchedule",
    "GuidedSampler",
    "PredictedX0Blend",
    "SAMPLERS",
    "SoftMaskBlend",
    "SoftMaskInpaintingInferer",
    "noise_like",
    "sampling_scheduler",
    "seeded_generators",
]
