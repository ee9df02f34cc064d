"""The generation job's segmentation of crops of another size than the stage-V head's (the full profile generates
512 px crops; the head works at the classifier's crop size): the crop reaches the head at its own size and the labels
come back at the crop's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bundle.engines.vgmedgen_generation import CaptionGenerationJob
from bundle.networks.vgmedgen_visual import VisualDisentangler


def test_crops_of_another_size_are_segmented_at_the_heads_size(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = VisualDisentangler(image_size=32).eval()
        for parameter in head.segmentation.parameters():  # a head whose labels vary over the crop
            parameter.data.normal_(0.0, 1.0)
    small = CaptionGenerationJob(torch.nn.Module(), None, head, [], None, tmp_path, 16, [4.0, 4.0])
    native = CaptionGenerationJob(torch.nn.Module(), None, head, [], None, tmp_path, 32, [2.0, 2.0])
    crops = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        labels = small.segment(crops)
        at_head_size = native.segment(F.interpolate(crops, size=(32, 32), mode="nearest"))
    assert labels.shape == (2, 16, 16) and labels.dtype == torch.long
    assert torch.equal(labels, at_head_size[:, ::2, ::2])
    assert len(labels.unique()) > 1
