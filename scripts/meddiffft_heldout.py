"""Does MedDiff-FT's fine-tuning help on lesions it did not see? The noise loss inside each held-out lesion slice's
first guiding mask (fixed noise and timesteps) of the stand-in foundation and of the fine-tuned model
(bundle/experiments/meddiffft_finetune.py). Held out: the training split's lesion cases after the first K and the
validation split's lesion cases. With ``--sample_steps N`` each model also repaints the held-out slices under the
dynamic guiding mask (``GuidedInpaintingInferer``, DDIM, the slice's own text) and the script reports the mean
absolute difference to the real slice inside the last guide (the lesion) and writes ``heldout_samples.png``
(masked input, each model, the real slice) to ``--output_dir``.

    python scripts/meddiffft_heldout.py [--models_dir models] [--dataset_dir demo/data] [--output_dir DIR]
        [--no_foundation_dir models/meddiffft_no_foundation]
"""

from __future__ import annotations

import json
from pathlib import Path

import fire
import matplotlib.pyplot as plt
import torch
from monai.bundle import ConfigParser

from bundle.data.splits import training_split
from bundle.experiments.meddiffft_finetune import held_out_masked_loss
from bundle.inferers.guided_inpainting import GuidedInpaintingInferer
from bundle.networks.meddiffft_inpainting import InpaintingDiffusion
from bundle.utils.bundle_files import BUNDLE_ROOT


def main(
    seed: int = 7,
    no_foundation_dir: str | None = None,
    sample_steps: int = 0,
    guidance_scale: float = 7.5,
    **overrides,
) -> None:
    """``no_foundation_dir``: also measure the model fine-tuned without the stand-in
    (``configs/meddiffft_ablation_no_foundation.json``'s ``model_dir``). ``overrides``: any ID of the fine-tuning
    config (``--models_dir``, ``--dataset_dir``, ``--output_dir``, ...)."""
    parser = ConfigParser()
    parser.read_config(
        [str(BUNDLE_ROOT / "configs" / name) for name in ("meddiffft_pretrain.json", "meddiffft_finetune.json")]
    )
    parser["bundle_root"] = str(BUNDLE_ROOT)
    for key, value in overrides.items():
        parser[key] = value
    datalist, fraction = parser.get_parsed_content("datalist"), parser.get_parsed_content("validation_fraction")
    k = parser.get_parsed_content("real_lesion_cases")
    lesions = [entry for entry in parser.get_parsed_content("training_split") if entry["label"] != "normal"]
    validation = training_split(datalist, "validation", fraction, parser.get_parsed_content("seed"))
    held_out = lesions[k:] + [entry for entry in validation if entry["label"] != "normal"]
    parser["training_cases"] = held_out
    dataset = parser.get_parsed_content("train#dataset")
    batch = torch.utils.data.default_collate([dataset[i] for i in range(len(dataset))])
    masks = parser.get_parsed_content("mask_source")(batch)
    kept = masks.flatten(1).any(dim=1)
    images, texts = batch["image"][kept], [t for t, keep in zip(batch["text"], kept.tolist(), strict=True) if keep]
    scheduler = parser.get_parsed_content("noise_scheduler")
    result = {"held_out_cases": len(held_out), "held_out_slices": int(kept.sum()), "real_lesion_cases": k}
    arms = {
        "stand_in": parser.get_parsed_content("foundation_dir"),
        "fine_tuned": parser.get_parsed_content("model_dir"),
    }
    if no_foundation_dir is not None:
        arms["fine_tuned_without_stand_in"] = no_foundation_dir
    lesion, host = batch["lesion_mask"][kept], (batch["soft_mask"][kept] > 0.5).float()
    schedule = parser.get_parsed_content("guide_schedule")
    inferer = GuidedInpaintingInferer.ddim(
        scheduler, num_inference_steps=max(sample_steps, 1), guidance_scale=guidance_scale, guide_schedule=schedule
    )
    pixel_mm = [float(size.mean()) for size in batch["pixel_mm"][kept]]
    columns = {"masked input": images * (1 - masks[kept])}
    for arm, folder in arms.items():
        model = InpaintingDiffusion.load(folder)
        result[arm] = {
            "masked_noise_loss": held_out_masked_loss(model, images, texts, masks[kept], scheduler, seed=seed)
        }
        if sample_steps:
            seeds = list(range(len(texts)))
            painted = inferer(
                images, model, lesion, texts, seeds, lesion_mask=lesion, host_mask=host, pixel_mm=pixel_mm
            )
            last = schedule(lesion, host, pixel_mm, 2)[-1]
            error = ((painted - images).abs() * last).flatten(1).sum(1) / last.flatten(1).sum(1)
            result[arm]["lesion_l1_to_real"] = float(error.mean())
            columns[arm] = painted
    print(json.dumps(result, indent=2))
    if sample_steps:
        columns["real"] = images
        output_dir = Path(parser.get_parsed_content("output_dir"))
        output_dir.mkdir(parents=True, exist_ok=True)
        rows = min(4, len(texts))
        figure, axes = plt.subplots(rows, len(columns), figsize=(2 * len(columns), 2 * rows), squeeze=False)
        for row in range(rows):
            for axis, (title, column) in zip(axes[row], columns.items(), strict=True):
                axis.imshow(column[row, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                axis.set_title(title, fontsize=7)
                axis.axis("off")
        figure.tight_layout()
        figure.savefig(output_dir / "heldout_samples.png", dpi=100)
        plt.close(figure)


if __name__ == "__main__":
    fire.Fire(main)
