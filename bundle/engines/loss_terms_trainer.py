"""The trainer of the bundle's non-diffusion stages whose objective is a sum of named terms (VG-MedGen's visual
and text disentanglement), as a MONAI ``SupervisedTrainer``.

One iteration: the batch on the device, the network in training mode, the subclass's terms
(:meth:`LossTermsTrainer.loss_terms`, a dictionary with the total under ``"loss"``), backward, the check after the
first batch that every trainable parameter took part (:func:`bundle.engines.trainable.require_gradients`), the
optimiser's step. The engine's output holds every term, detached, so handlers can log each one.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import torch
from monai.engines import SupervisedTrainer

from bundle.engines.trainable import require_gradients
from bundle.engines.utils import batch_to_device, unwrap


class LossTermsTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` whose loss is :meth:`loss_terms`' ``"loss"``; ``kwargs`` those of ``SupervisedTrainer``
    (``loss_function`` as :meth:`loss_terms` calls it)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(decollate=False, **kwargs)
        self._gradients_checked = False

    @abstractmethod
    def loss_terms(self, model: torch.nn.Module, batch: Mapping) -> dict[str, torch.Tensor]:
        """The named terms of the batch's loss, their weighted sum under ``"loss"``."""

    def _iteration(self, engine: LossTermsTrainer, batchdata: Mapping) -> dict[str, torch.Tensor]:
        batch = batch_to_device(batchdata, engine.state.device)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        terms = self.loss_terms(unwrap(engine.network), batch)
        terms["loss"].backward()
        if not self._gradients_checked:
            require_gradients(engine.network)
            self._gradients_checked = True
        engine.optimizer.step()
        return {name: value.detach() for name, value in terms.items()}
