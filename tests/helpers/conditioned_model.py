"""A small conditioned denoiser with two condition groups, for the tests of the generic diffusion trainer and guided
sampler (MedSoft-Diffusion's own model is tested through them in the MedSoft tests), its trainer and batches."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch import nn

from bundle.engines.diffusion_trainer import DiffusionTrainer

WIDTH = 4  # each condition group: (B, 2, WIDTH)
SIZE = 8  # the latents of batches(): (B, 1, SIZE, SIZE)


class TwoGroupModel(nn.Module):
    """``conv(z_t) * (1 + t / 1000) + sum_g W_g mean(conditions[g])``, with condition groups ``"a"`` and ``"b"``
    (null conditions: zeros). Each forward pass records the conditions it was given in ``seen``."""

    condition_groups = ("a", "b")

    def __init__(self, channels: int = 1, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
            self.project = nn.ModuleDict({group: nn.Linear(WIDTH, channels) for group in self.condition_groups})
        self.seen: list[dict[str, torch.Tensor]] = []

    def conditions(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Random non-null conditions for a batch."""
        return {group: torch.randn(batch_size, 2, WIDTH, generator=generator) + 1.0 for group in self.condition_groups}

    def null_conditions(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {group: torch.zeros(batch_size, 2, WIDTH) for group in self.condition_groups}

    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor, conditions) -> torch.Tensor:
        self.seen.append({group: value.detach().clone() for group, value in conditions.items()})
        scale = 1.0 + timesteps.float().view(-1, 1, 1, 1) / 1000.0
        output = self.conv(latents) * scale
        for group in self.condition_groups:
            output = output + self.project[group](conditions[group].mean(dim=1))[:, :, None, None]
        return output


class TwoGroupTrainer(DiffusionTrainer):
    """Trains a :class:`TwoGroupModel` on :func:`batches`."""

    def prepare(self, model, batch):
        return batch["image"], {"a": batch["a"], "b": batch["b"]}, {}


def batches(count: int, size: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of ``size`` random latents ``image`` and conditions."""
    generator = torch.Generator().manual_seed(seed)
    model = TwoGroupModel()
    return [
        {"image": torch.randn(size, 1, SIZE, SIZE, generator=generator), **model.conditions(size, generator)}
        for _ in range(count)
    ]


def trainer(model: TwoGroupModel, data, max_epochs: int = 1, **kwargs) -> TwoGroupTrainer:
    """An SGD trainer of ``model`` on ``data`` (``kwargs``: more of :class:`DiffusionTrainer`'s)."""
    return TwoGroupTrainer(
        noise_scheduler=DDPMScheduler(num_train_timesteps=1000),
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=data,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        **kwargs,
    )
