"""MedSoft-Diffusion MONAI bundle: soft-mask, semantics-guided lesion synthesis in spine MRI.

The model's runtime, by role (each layer imports only the ones before it):

- :mod:`bundle.utils`, :mod:`bundle.errors`: files, hashing, precision; the bad-input and output errors;
- :mod:`bundle.data`: datalists, the DICOM files of a series, slice datasets and their cache, splits;
- :mod:`bundle.transforms`: from a datalist entry to model-grid slices (loading, soft mask, slices, grid);
- :mod:`bundle.networks`: medical CLIP, MSC, text condition, guided UNet, diffusion space, the whole model;
- :mod:`bundle.losses`, :mod:`bundle.metrics`: training losses; image-quality, FID / KID and classifier scores;
- :mod:`bundle.engines`, :mod:`bundle.inferers`: trainers, evaluators, the synthesis job; the soft-mask sampler;
- :mod:`bundle.handlers`: checkpoints, weight export, sample grids, reports;
- :mod:`bundle.io`: synthetic volumes written back with provenance and previews.

Tooling around the model, which the runtime never imports: :mod:`bundle.weights` (pretrained-folder layouts, the
checker), :mod:`bundle.demo` (the phantom data), :mod:`bundle.preparation` (real datasets to datalists),
:mod:`bundle.balancing` (balancing a training list with synthetic cases), :mod:`bundle.experiments`.
"""

__version__ = "0.2.0"
"""The bundle's version; ``metadata.json``'s ``version`` is the same (``tests/test_metadata.py`` checks it), and
``pyproject.toml`` reads it from here."""
