"""Helpers of the bundle's engines: the module inside a DistributedDataParallel wrapper, a batch on a device."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or the module itself)."""
    return network.module if isinstance(network, torch.nn.parallel.DistributedDataParallel) else network


def batch_to_device(batch: Mapping, device: torch.device) -> dict[str, object]:
    """The batch with its tensors on ``device`` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
