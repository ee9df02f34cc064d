"""Which parameters train: the optimiser's parameters, and the check after the first backward pass that every one
of them took part in the loss."""

from __future__ import annotations

import torch

from bundle.engines.utils import unwrap


def _training_setting(network: torch.nn.Module) -> str:
    unet = getattr(unwrap(network), "unet", None)
    if unet is None or not hasattr(unet, "trainable"):
        return ""
    return f" (trainable {unet.trainable!r} with msc_scale {unet.scale:g})"


def trainable_parameters(network: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters the optimiser gets: those that require a gradient; none is refused with a clear error."""
    parameters = [p for p in network.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(
            f"nothing to train: no parameter of the network is trainable{_training_setting(network)}. "
            "With msc_scale 0 the MSC adapter takes no part; the 'without MSC' ablation trains "
            "LoRA on the text cross-attention instead (configs/ablation_no_msc.json)"
        )
    return parameters


def require_gradients(network: torch.nn.Module) -> None:
    """After a backward pass: every trainable parameter must have received a gradient (taken part in the loss).

    A configuration in which none does would train nothing; one in which some do not leaves them untrained and
    stops DistributedDataParallel at the next step. Both are refused with the names of the parameters.
    """
    trainable = [(name, p) for name, p in unwrap(network).named_parameters() if p.requires_grad]
    if not trainable:
        trainable_parameters(network)  # raises
    unused = [name for name, p in trainable if p.grad is None]
    if not unused:
        return
    what = (
        "no trainable parameter takes part"
        if len(unused) == len(trainable)
        else f"{len(unused)} of {len(trainable)} trainable parameters take no part"
    )
    raise ValueError(
        f"{what} in the loss{_training_setting(network)}, e.g. {', '.join(unused[:3])}; they would "
        "not train (and stop DistributedDataParallel): freeze them or choose another 'trainable'"
    )
