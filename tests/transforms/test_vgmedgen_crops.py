"""VG-MedGen's crops of the phantom: the classifier's working window with anatomy labels (background, vertebra,
lesion) that the visual stage can train on."""

from __future__ import annotations

import torch

from bundle.data.datalist import load_datalist
from bundle.transforms.case_to_slices import slice_transform
from bundle.transforms.vgmedgen_crops import AnatomyLabelsd, vgmedgen_crop_transform
from tests.helpers.visual_training import held_out, small_visual_model, train


def test_labels_mark_the_vertebra_and_only_its_lesion():
    soft = torch.zeros(1, 4, 4)
    soft[0, :2] = 0.8
    soft[0, 2] = 0.3  # outside the vertebra's half-height outline
    lesion = torch.zeros(1, 4, 4)
    lesion[0, 1:3, :2] = 1
    labels = AnatomyLabelsd()({"soft_mask": soft, "lesion_mask": lesion})["anatomy_labels"]
    assert labels[0].tolist() == [[1, 1, 1, 1], [2, 2, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_phantom_crops_are_the_classifiers_window_with_vertebra_and_lesion_labels(demo_data):
    entries = load_datalist(demo_data / "datalist.json", "training") + load_datalist(demo_data / "datalist.json")
    entry = next(e for e in entries if e["label"] != "normal")
    items = vgmedgen_crop_transform(spatial_size=32)(entry)
    window = slice_transform(spatial_size=32)(entry)
    assert len(items) == len(window) == 2
    for item, same in zip(items, window, strict=True):
        assert torch.equal(torch.as_tensor(item["image"]), torch.as_tensor(same["image"]))  # the same crop
        labels = item["anatomy_labels"]
        assert labels.shape == (1, 32, 32) and set(labels.unique().tolist()) <= {0.0, 1.0, 2.0}
        assert (labels >= 1).float().mean() > 0.05  # the target vertebra is in the window
    assert any((item["anatomy_labels"] == 2).any() for item in items)  # the lesion is in the largest slices


def test_a_short_stage_v_training_on_phantom_crops_segments_the_vertebra(demo_data):
    transform = vgmedgen_crop_transform(spatial_size=32)

    def crops(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        items = [item for entry in load_datalist(demo_data / "datalist.json", split) for item in transform(entry)]
        images = torch.stack([torch.as_tensor(i["image"]).as_subclass(torch.Tensor) for i in items])
        return images, torch.stack([i["anatomy_labels"] for i in items])

    (train_images, train_labels), (test_images, test_labels) = crops("training"), crops("test")
    model = small_visual_model(32)
    rec_before, (dice_before, _) = held_out(model, test_images, test_labels)
    train(model, train_images, train_labels, steps=100)
    rec_after, (dice_after, _) = held_out(model, test_images, test_labels)
    assert rec_after < 0.5 * rec_before, (rec_before, rec_after)
    assert dice_after > 0.7 and dice_after > dice_before + 0.5, (dice_before, dice_after)
