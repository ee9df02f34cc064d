"""A picture of validation samples after each evaluation: masked input, synthesis and original side by side."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class SampleGridWriter:
    """After each evaluation, a PNG of masked input / synthesis / original for the first ``max_rows`` items
    (``samples_epoch_<epoch>.png`` in ``output_dir``), and the same grid in TensorBoard when a writer is given."""

    def __init__(
        self, output_dir: str | os.PathLike, max_rows: int = 4, summary_writer=None, tag: str = "validation_samples"
    ) -> None:
        self.output_dir, self.max_rows, self.summary_writer, self.tag = Path(output_dir), max_rows, summary_writer, tag

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._keep_first)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _keep_first(self, engine: Engine) -> None:
        if engine.state.iteration == 1 or not hasattr(self, "_rows"):
            self._rows = []
        output = engine.state.output
        for i in range(output["pred"].shape[0]):
            if len(self._rows) < self.max_rows:
                self._rows.append([output[k][i, 0].detach().cpu() for k in ("masked", "pred", "label")])

    def __call__(self, engine: Engine) -> None:
        rows = getattr(self, "_rows", [])
        if not rows:
            return
        epoch = getattr(engine.state, "epoch", 0)
        figure, axes = plt.subplots(len(rows), 3, figsize=(6, 2 * len(rows)), squeeze=False)
        for row, images in zip(axes, rows, strict=True):
            for axis, image, title in zip(row, images, ("masked input", "synthesised", "original"), strict=True):
                axis.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
                axis.set_title(title, fontsize=8)
                axis.axis("off")
        figure.tight_layout()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"samples_epoch_{epoch:04d}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        if self.summary_writer is not None:
            grid = torch.cat([torch.cat(images, dim=1) for images in rows], dim=0)
            self.summary_writer.add_image(self.tag, grid[None], epoch)
        logger.info("validation samples: %s", path)
