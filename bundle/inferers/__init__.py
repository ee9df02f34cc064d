"""MONAI inferers: sampling a lesion into the soft-masked region with guidance and a blend at every step."""

from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer

__all__ = ["SoftMaskInpaintingInferer"]
