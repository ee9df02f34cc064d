"""MedSoft-Diffusion MONAI bundle: soft-mask, semantics-guided lesion synthesis in spine MRI."""

__version__ = "0.1.0"
