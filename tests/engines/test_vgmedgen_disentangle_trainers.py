"""VG-MedGen's stage trainers V and T on the loss-terms trainer: each learns on tiny toy crops in a few epochs (its
loss falls where an untrained model's does not), stage V's validation gives each class's Dice, stage T leaves the
frozen visual disentangler and text encoder alone, every term reaches the engine's output, and a parameter that
takes no part is refused."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader
from monai.handlers import MeanDice

from bundle.engines.vgmedgen_disentangle_trainers import (
    TextDisentangleTrainer,
    VisualDisentangleTrainer,
    VisualSegmentationEvaluator,
    one_class,
)
from bundle.losses.vgmedgen_text import TextAlignmentLoss
from bundle.losses.vgmedgen_visual import VisualDisentangleLoss
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.vgmedgen_text import TextDisentangler
from tests.helpers.visual_training import held_out, small_visual_model, toy_crops


def crop_loader(count: int, seed: int, batch_size: int = 8) -> DataLoader:
    """Toy crops with their labels and a caption naming the lesion's signal (bright or dark)."""
    images, labels = toy_crops(count, seed)
    items = []
    for image, label in zip(images, labels, strict=True):
        bright = image[label == 2].mean() > image[label == 1].mean()
        text = "a bright round lesion in the vertebra" if bright else "a dark round lesion in the vertebra"
        items.append({"image": image, "anatomy_labels": label, "text": text})
    return DataLoader(items, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))


def test_stage_v_trainer_learns_to_reconstruct_and_segment():
    model = small_visual_model()
    images, labels = toy_crops(16, seed=1)
    rec_before, (dice_before, _) = held_out(model, images, labels)
    trainer = VisualDisentangleTrainer(
        device=torch.device("cpu"),
        max_epochs=8,
        train_data_loader=crop_loader(32, seed=0),
        network=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
        loss_function=VisualDisentangleLoss(),
    )
    trainer.run()
    assert {"rec", "kl", "dice", "reg", "loss"} <= set(trainer.state.output)
    rec_after, (dice_after, _) = held_out(model, images, labels)
    assert rec_after < 0.5 * rec_before, (rec_before, rec_after)
    assert dice_after > dice_before + 0.3, (dice_before, dice_after)
    # the validation metrics: each class's Dice per crop, averaged over the crops
    with torch.no_grad():
        found = model.eval().segmentation(model.anatomy(images)).argmax(dim=1, keepdim=True)
    expected = {}
    for name, index in (("vertebra", 1), ("lesion", 2)):
        a, b = (found == index).flatten(1), (labels == index).flatten(1)
        expected[name] = (2 * (a & b).sum(1) / (a.sum(1) + b.sum(1))).mean().item()
    metrics = {
        name: MeanDice(include_background=False, output_transform=lambda output, index=index: one_class(output, index))
        for name, index in (("vertebra", 1), ("lesion", 2))
    }
    evaluator = VisualSegmentationEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(
            [{"image": i, "anatomy_labels": m} for i, m in zip(images, labels, strict=True)], batch_size=8
        ),
        network=model,
        key_val_metric={"vertebra": metrics["vertebra"]},
        additional_metrics={"lesion": metrics["lesion"]},
    )
    evaluator.run()
    assert evaluator.state.metrics == pytest.approx(expected, abs=1e-5) and expected["vertebra"] > 0.3, expected


def test_stage_t_trainer_aligns_captions_with_the_frozen_visual_features():
    visual = small_visual_model()
    text_encoder = MedicalClipEncoder.tiny(seed=0)
    frozen = {name: t.clone() for name, t in [*visual.state_dict().items(), *text_encoder.state_dict().items()]}
    torch.manual_seed(0)
    model = TextDisentangler(text_encoder.embed_dim, hidden=64)
    loader = crop_loader(32, seed=0)
    trainer = TextDisentangleTrainer(
        text_encoder=text_encoder,
        visual=visual,
        device=torch.device("cpu"),
        max_epochs=15,
        train_data_loader=loader,
        network=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
        loss_function=TextAlignmentLoss(),
    )

    def alignment() -> float:
        model.eval()
        with torch.no_grad():
            terms = [trainer.loss_terms(model, batch) for batch in loader]
        return sum((t["anatomy"] + t["style"]).item() for t in terms) / len(terms)

    before = alignment()
    trainer.run()
    after = alignment()
    assert after < 0.5 * before, (before, after)
    assert {"anatomy", "style", "rec", "loss"} <= set(trainer.state.output)
    state = {**visual.state_dict(), **text_encoder.state_dict()}
    assert all(torch.equal(state[name], tensor) for name, tensor in frozen.items())


def test_stage_t_refuses_a_disentangler_of_another_width():
    with pytest.raises(ValueError, match="takes 32-wide embeddings, the text encoder makes 64"):
        TextDisentangleTrainer(
            text_encoder=MedicalClipEncoder.tiny(seed=0),
            visual=small_visual_model(),
            device=torch.device("cpu"),
            train_data_loader=crop_loader(8, seed=0),
            network=(model := TextDisentangler(32, hidden=8)),
            optimizer=torch.optim.Adam(model.parameters()),
            loss_function=TextAlignmentLoss(),
            max_epochs=1,
        )


def test_a_parameter_outside_the_loss_is_refused_after_the_first_batch():
    model = small_visual_model()
    model.unused = torch.nn.Parameter(torch.zeros(1))
    trainer = VisualDisentangleTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=crop_loader(8, seed=0),
        network=model,
        optimizer=torch.optim.Adam(model.parameters()),
        loss_function=VisualDisentangleLoss(),
    )
    with pytest.raises(ValueError, match="1 of .* trainable parameters take no part in the loss, e.g. unused"):
        trainer.run()
