"""The PNG a person looks at: input, soft mask, output and difference of one slice, with the lesion text."""

from __future__ import annotations

import io
import os
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bundle.utils.files import write_atomically


def render_preview(
    path: str | os.PathLike, image: np.ndarray, soft_mask: np.ndarray, output: np.ndarray, title: str = ""
) -> None:
    """Write a 4-panel PNG of 2-D arrays ``(H, W)`` shown rows top-to-bottom, columns left-to-right.

    ``image`` and ``output`` share one grey scale (the input's 0.5-99.5 percentile range); the difference
    panel uses a symmetric diverging scale.
    """
    low, high = np.percentile(image, [0.5, 99.5])
    difference = output - image
    limit = float(np.abs(difference).max()) or 1.0
    figure, axes = plt.subplots(1, 4, figsize=(12, 3.8), dpi=100)
    panels = [
        ("input", image, "gray", low, high),
        ("soft mask M_b", soft_mask, "magma", 0.0, 1.0),
        ("output (synthetic)", output, "gray", low, high),
        ("output - input", difference, "coolwarm", -limit, limit),
    ]
    for axis, (name, values, colormap, vmin, vmax) in zip(axes, panels, strict=True):
        shown = axis.imshow(values, cmap=colormap, vmin=vmin, vmax=vmax, interpolation="nearest")
        axis.set_title(name, fontsize=10)
        axis.axis("off")
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
    if title:
        # parse_math=False: the text is shown as written; "$...$" in it is not read as (possibly invalid) TeX
        figure.suptitle("\n".join(textwrap.wrap(title, 140)[:3]), fontsize=9, parse_math=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_atomically(path, buffer.getvalue())
