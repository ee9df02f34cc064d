"""Loading stage 2's trained weights into the network definition when a workflow starts, as MONAI's
``CheckpointLoader`` does for a checkpoint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ignite.engine import Engine, Events

from bundle.networks.medsoft_diffusion import MedSoftDiffusion, load_trained_weights

logger = logging.getLogger(__name__)


class TrainedWeightsLoader:
    """At ``Events.STARTED``, load what stage 2 left in ``models_dir`` into ``model`` (a
    :func:`bundle.networks.medsoft_diffusion.trained_architecture`): the adapter and, unless the base UNet is a
    pretrained one (``base_unet_dir``), the base UNet's weights (:func:`load_trained_weights`)."""

    def __init__(
        self, model: MedSoftDiffusion, models_dir: str | os.PathLike, base_unet_dir: str | os.PathLike | None = None
    ) -> None:
        self.model, self.models_dir, self.base_unet_dir = model, Path(models_dir), base_unet_dir

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        load_trained_weights(self.model, self.models_dir, self.base_unet_dir)
        logger.info("trained weights loaded from %s", self.models_dir)
