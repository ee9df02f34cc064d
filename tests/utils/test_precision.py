"""The precision names resolve as documented."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from bundle.inferers.soft_mask_inpainting import SoftMaskInpaintingInferer
from bundle.utils.precision import autocast_dtype


def test_precision_names_resolve_as_documented():
    assert autocast_dtype("auto", "cpu") is None and autocast_dtype(None, "cpu") is None
    assert autocast_dtype("fp32", "cpu") is None
    assert autocast_dtype("bf16", "cpu") == torch.bfloat16 and autocast_dtype("FP16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype("int8", "cpu")
    with pytest.raises(ValueError, match="precision"):
        SoftMaskInpaintingInferer(DDPMScheduler(), precision="half")
