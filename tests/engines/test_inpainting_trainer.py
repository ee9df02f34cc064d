"""MedDiff-FT's inpainting trainer: the stand-in foundation's random masks lie inside the host, and a short
fine-tune on a few lesion images, from the stand-in, lowers the masked noise loss on held-out lesion images."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from diffusers import DDPMScheduler
from ignite.engine import Events

from bundle.engines.inpainting_trainer import InpaintingDiffusionTrainer, RandomHostMasks
from bundle.experiments.meddiffft_finetune import held_out_masked_loss
from bundle.inferers.guide_mask import FirstGuideMasks, GuideMaskSchedule
from bundle.losses.soft_masked_noise import SoftMaskedNoiseLoss
from bundle.networks.meddiffft_inpainting import (
    RELEASE_PROMPT,
    InpaintingDiffusion,
    LesionPrompt,
    tiny_inpainting_model,
)
from bundle.transforms.morphology import ErodeMaskMM

SIZE = 24


def toy_item(generator: torch.Generator, lesion: bool) -> dict:
    """A grey 'vertebral body' box with texture on a dark background; with ``lesion`` a bright disc inside it."""
    top, left = (int(v) for v in torch.randint(2, 7, (2,), generator=generator))
    height, width = (int(v) for v in torch.randint(14, 17, (2,), generator=generator))
    host = torch.zeros(1, SIZE, SIZE)
    host[:, top : top + height, left : left + width] = 1
    image = 0.1 + 0.5 * host + 0.05 * torch.rand(1, SIZE, SIZE, generator=generator) * host
    lesion_mask = torch.zeros_like(host)
    if lesion:
        radius = 2.5 + 1.5 * float(torch.rand((), generator=generator))
        cy = top + height / 2 + float(torch.randint(-2, 3, (), generator=generator))
        cx = left + width / 2 + float(torch.randint(-2, 3, (), generator=generator))
        rows, cols = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
        lesion_mask[0] = (((rows - cy) ** 2 + (cols - cx) ** 2) <= radius**2).float()
        image = torch.where(lesion_mask > 0, torch.full_like(image, 0.95), image)
    text = "a bright round lesion in the vertebral body" if lesion else "a normal vertebral body"
    return {
        "image": image,
        "soft_mask": host,
        "lesion_mask": lesion_mask,
        "pixel_mm": torch.ones(2),
        "text": text,
        "case_id": "toy",
    }


def toy_items(count: int, seed: int, lesion: bool) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    return [toy_item(generator, lesion) for _ in range(count)]


def scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False)


def train(model: InpaintingDiffusion, items: list[dict], mask_source, steps: int, lr: float) -> list[float]:
    loader = torch.utils.data.DataLoader(items, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    trainer = InpaintingDiffusionTrainer(
        scheduler(),
        mask_source,
        device=torch.device("cpu"),
        max_epochs=-(-steps // len(loader)),
        epoch_length=len(loader),
        train_data_loader=loader,
        network=model,
        optimizer=torch.optim.AdamW(model.unet.parameters(), lr=lr),
        loss_function=SoftMaskedNoiseLoss(mask_weighted=False),
    )
    losses = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: losses.append(engine.state.output["loss"].item())
    )
    trainer.run()
    return losses


def test_random_host_masks_lie_inside_the_host_and_vary():
    items = toy_items(8, seed=1, lesion=False)
    batch = torch.utils.data.default_collate(items)
    masks = RandomHostMasks(diameter_mm=(4.0, 10.0), inset_mm=1.0, seed=0)(batch)
    inner = torch.stack([ErodeMaskMM(1.0, spacing_mm=[1.0, 1.0])(host) for host in batch["soft_mask"]])
    areas = masks.flatten(1).sum(dim=1)
    assert masks.shape == (8, 1, SIZE, SIZE) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (areas > 4).all() and not (masks * (1 - inner)).any()
    assert len(set(areas.tolist())) > 3  # sizes vary
    filled = areas / torch.tensor(
        [float(m.nonzero()[:, 1:].amax(0).sub(m.nonzero()[:, 1:].amin(0)).add(1).prod()) for m in masks]
    )
    assert (filled == 1).any() and (filled < 0.9).any()  # boxes and ellipses
    assert torch.equal(masks, RandomHostMasks(diameter_mm=(4.0, 10.0), inset_mm=1.0, seed=0)(batch))


def test_a_short_fine_tune_lowers_the_masked_loss_on_held_out_lesions(one_torch_thread):
    torch.manual_seed(0)  # the trainer's noise, timestep and dropout draws
    schedule = GuideMaskSchedule("shrink", dilation_fraction=0.5, shrink_until=0.6)
    model = tiny_inpainting_model(SIZE, unet_channels=(16, 32), seed=0)
    start = time.perf_counter()
    pretrain = train(model, toy_items(48, seed=2, lesion=False), RandomHostMasks((4.0, 10.0), seed=0), 80, 2e-3)
    stand_in = copy.deepcopy(model)
    few = toy_items(4, seed=3, lesion=True)  # K = 4 lesion cases
    finetune = train(model, few * 2, FirstGuideMasks(schedule), 48, 1e-3)
    held_out = toy_items(16, seed=4, lesion=True)
    batch = torch.utils.data.default_collate(held_out)
    masks = FirstGuideMasks(schedule)(batch)
    before, after = (
        held_out_masked_loss(net, batch["image"], batch["text"], masks, scheduler()) for net in (stand_in, model)
    )
    print(
        f"pretrain loss {sum(pretrain[:10]) / 10:.3f} -> {sum(pretrain[-10:]) / 10:.3f}, fine-tune "
        f"{sum(finetune[:5]) / 5:.3f} -> {sum(finetune[-5:]) / 5:.3f} ({time.perf_counter() - start:.0f} s); held-out "
        f"masked loss stand-in {before:.3f}, fine-tuned {after:.3f}"
    )
    assert sum(pretrain[-10:]) < sum(pretrain[:10])
    assert after < 0.8 * before


def test_the_prompt_mode_chooses_the_entrys_own_text_or_one_fixed_prompt():
    model = tiny_inpainting_model(SIZE, unet_channels=(16, 32), seed=0)
    generator = torch.Generator().manual_seed(5)
    batch = torch.utils.data.default_collate([toy_item(generator, lesion=True), toy_item(generator, lesion=False)])
    batch["soft_mask"] = torch.ones_like(batch["soft_mask"])
    states = {}
    for mode in ("entry", "fixed"):
        trainer = InpaintingDiffusionTrainer(
            scheduler(),
            RandomHostMasks((4.0, 6.0), inset_mm=0.0, seed=0),
            prompt=LesionPrompt(mode),
            network=model,
            optimizer=torch.optim.SGD(model.unet.parameters(), lr=0.1),
            loss_function=SoftMaskedNoiseLoss(),
            train_data_loader=[batch],
            max_epochs=1,
            device=torch.device("cpu"),
        )
        states[mode] = trainer.prepare(model, batch)[1]["text"]
    assert not torch.allclose(states["entry"][0], states["entry"][1])  # each case's own description
    torch.testing.assert_close(states["entry"], model.text_states(batch["text"]))
    torch.testing.assert_close(states["fixed"], model.text_states([RELEASE_PROMPT] * 2))
    with pytest.raises(ValueError, match="prompt mode must be one of"):
        LesionPrompt("class")
