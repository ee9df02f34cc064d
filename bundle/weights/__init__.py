"""Pretrained weights of the ``sd15`` profile (Stable Diffusion 1.5, BiomedCLIP, BiomedBERT).

- :mod:`~bundle.weights.layouts`: which files the loaders read from each pretrained folder (imported here; the
  networks use it);
- :mod:`~bundle.weights.checker`: the checker of ``scripts/check_weights.py`` (files, sizes, shapes, published
  hashes in ``known_weight_hashes.json``, package data);
- :mod:`~bundle.weights.conversion`: pickled weights to safetensors.

The checker and the conversion are tooling, not the model: import them by their module names.
"""

from bundle.weights.layouts import SD15_PARTS, open_clip_weights, sd15_files

__all__ = ["SD15_PARTS", "open_clip_weights", "sd15_files"]
