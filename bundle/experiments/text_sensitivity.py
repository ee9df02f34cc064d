"""How much does the trained denoiser listen to the text, apart from the sampler? A one-step probe.

A normal slice x0 is noised to timestep t with fixed noise; the model's estimate of x0 (the scheduler's
``pred_original_sample``, so it holds for any ``prediction_type``) is read inside the soft mask's core (M_b > 0.5)
for several texts of the same slice. Two figures per text and timestep, in the model's intensity units ([0, 1]):

* the **bias**: mean(x0_hat - x0) in the core. With a text that asks for no lesion, a model that knows the data
  returns the slice (bias near 0 once the noise lets it see the marrow); a negative bias is a darkening the model
  brings whatever the text says.
* the **text effect**: the bias with a lesion text minus the bias with the no-lesion text. A hyperintense text
  should raise it, a hypointense one lower it; lesions cover a small part of the core, so a model that follows the
  text moves it by a few hundredths, not by 0.001.

Sampling compounds both over its steps; this probe tells the model's part from the sampler's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from bundle.metrics.text_adherence import requested_signal

NO_LESION_TEXT = (
    "T1-weighted sagittal lumbar spine MRI: normal {level} vertebral body with homogeneous marrow signal, no focal "
    "lesion."
)
"""The phantom's wording of a normal vertebra, the reference text (``{level}``: the request's level)."""

CORE = 0.5
"""The soft mask's core: where M_b > 0.5."""


def swapped_signal(text: str) -> str | None:
    """The text with its signal word swapped (hyperintense <-> hypointense), ``None`` when it asks for neither."""
    signal = requested_signal(text)
    if signal == "unspecified":
        return None
    other = "hypointense" if signal == "hyperintense" else "hyperintense"
    return text.replace(signal, other)


def text_variants(text: str, level: str) -> dict[str, str]:
    """The texts one request is probed with: the request's own, its signal swapped and the no-lesion reference."""
    variants = {"request": text, "no_lesion": NO_LESION_TEXT.format(level=level)}
    swapped = swapped_signal(text)
    if swapped is not None:
        variants["swapped"] = swapped
    return variants


@torch.no_grad()
def one_step_bias(
    network,
    noise_scheduler,
    images: torch.Tensor,
    soft_masks: torch.Tensor,
    texts: Mapping[str, str],
    timesteps: Sequence[int],
    seed: int = 0,
) -> dict[str, dict[int, float]]:
    """Mean ``x0_hat - x0`` in the soft mask's core, per text name and timestep.

    Args:
        network: a :class:`bundle.networks.medsoft_diffusion.MedSoftDiffusion` (``conditions``, ``space``, forward).
        noise_scheduler: the training scheduler (a diffusers scheduler whose ``step`` gives
            ``pred_original_sample``).
        images: the slices x0 ``(B, 1, H, W)`` in [0, 1]; soft_masks: M_b of the same shape.
        texts: name -> text; every slice is probed with each.
        timesteps: the training timesteps to noise to.
        seed: the noise (the same for every text, so texts are compared on the same noisy input).
    """
    if images.shape != soft_masks.shape:
        raise ValueError(f"images {tuple(images.shape)} and soft masks {tuple(soft_masks.shape)} differ")
    core = (soft_masks > CORE).to(images.dtype)
    if core.sum() == 0:
        raise ValueError(f"no pixel of the soft masks is above {CORE}: nothing to probe")
    clean = network.space.encode(images)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=clean.dtype)
    masked = images * (1.0 - soft_masks)
    conditions_of = {name: network.conditions([text] * images.shape[0], masked) for name, text in texts.items()}
    result: dict[str, dict[int, float]] = {name: {} for name in texts}
    for timestep in timesteps:
        steps = torch.full((clean.shape[0],), int(timestep), dtype=torch.long)
        noisy = noise_scheduler.add_noise(clean, noise, steps)
        for name, conditions in conditions_of.items():
            prediction = network(noisy, steps, conditions)
            estimate = noise_scheduler.step(prediction, int(timestep), noisy).pred_original_sample
            error = (network.space.decode(estimate) - images) * core
            result[name][int(timestep)] = float(error.sum() / core.sum())
    return result


def summarise(rows: Sequence[Mapping[str, Mapping[int, float]]]) -> dict[str, dict[str, dict[int, float]]]:
    """Over requests: the mean bias per text name and timestep, and the mean text effect (bias minus the
    no-lesion text's) per lesion text name and timestep."""
    names = sorted({name for row in rows for name in row})
    timesteps = sorted({t for row in rows for values in row.values() for t in values})

    def mean(name: str, t: int, relative: bool) -> float:
        values = [row[name][t] - (row["no_lesion"][t] if relative else 0.0) for row in rows if name in row]
        return float(np.mean(values))

    bias = {name: {t: mean(name, t, False) for t in timesteps} for name in names}
    effect = {name: {t: mean(name, t, True) for t in timesteps} for name in names if name != "no_lesion"}
    return {"bias": bias, "text_effect": effect}
