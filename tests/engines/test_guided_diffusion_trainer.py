"""The stage-2 trainer: the paper's condition dropout by groups, and the loss weight with the lesion's own mask."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from bundle.engines.guided_diffusion_trainer import GuidedDiffusionTrainer, medsoft_condition_dropout
from bundle.losses.soft_masked_noise import SoftMaskedNoiseLoss
from bundle.networks.conditions import draw_condition_dropout
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import MedSoftDiffusion, tiny_model


def test_condition_dropout_rates_match_the_paper():
    dropped = draw_condition_dropout(
        200_000, medsoft_condition_dropout(), MedSoftDiffusion.condition_groups, torch.Generator().manual_seed(0)
    )
    drop_text, drop_msc = dropped["text"], dropped["msc"]
    assert float((drop_text & ~drop_msc).float().mean()) == pytest.approx(0.05, abs=0.003)
    assert float((drop_msc & ~drop_text).float().mean()) == pytest.approx(0.05, abs=0.003)
    assert float((drop_text & drop_msc).float().mean()) == pytest.approx(0.05, abs=0.003)


def _tiny_trainer(lesion_loss_weight: float) -> tuple[GuidedDiffusionTrainer, MedSoftDiffusion]:
    model = tiny_model(spatial_size=16, clip_encoder=MedicalClipEncoder.tiny(seed=0), unet_channels=(16, 32), seed=0)
    trainer = GuidedDiffusionTrainer(
        DDPMScheduler(num_train_timesteps=1000),
        lesion_loss_weight=lesion_loss_weight,
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[],
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        loss_function=SoftMaskedNoiseLoss(),
    )
    return trainer, model


def _slice_batch(with_lesion_mask: bool = True) -> dict:
    soft_mask = torch.zeros(2, 1, 16, 16)
    soft_mask[:, :, 2:14, 2:14] = 0.8
    lesion = torch.zeros_like(soft_mask)
    lesion[0, :, 6:9, 6:9] = 1.0  # the second item is a normal slice: no lesion voxel
    image = torch.rand(2, 1, 16, 16)
    batch = {"image": image, "soft_mask": soft_mask, "masked_image": image * (1 - soft_mask), "text": ["a", "b"]}
    return {**batch, "lesion_mask": lesion} if with_lesion_mask else batch


def test_the_lesion_loss_weight_adds_the_lesion_mask_to_the_soft_mask():
    batch = _slice_batch()
    for weight in (0.0, 4.0):
        trainer, model = _tiny_trainer(weight)
        _, _, loss_inputs = trainer.prepare(model, batch)
        torch.testing.assert_close(loss_inputs["mask"], batch["soft_mask"] + weight * batch["lesion_mask"])
    # an error confined to the lesion weighs more in the loss when the lesion is weighted
    target, prediction = torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)
    prediction[0, :, 6:9, 6:9] = 1.0
    losses = [
        float(SoftMaskedNoiseLoss()(prediction, target, batch["soft_mask"] + weight * batch["lesion_mask"]))
        for weight in (0.0, 4.0)
    ]
    assert losses[1] > 2 * losses[0]


def test_a_lesion_loss_weight_without_lesion_masks_or_below_zero_is_refused():
    trainer, model = _tiny_trainer(4.0)
    with pytest.raises(KeyError, match="lesion_mask"):
        trainer.prepare(model, _slice_batch(with_lesion_mask=False))
    with pytest.raises(ValueError, match="lesion_loss_weight"):
        _tiny_trainer(-1.0)
