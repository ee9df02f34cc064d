"""The through-plane figure is centred on the lesion's strongest change and draws the three planes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bundle.experiments.through_plane_figure import ReformatRow, lesion_centre, reformat_figure


def planted_row() -> ReformatRow:
    """A box vertebra with a darker blob centred off the middle at voxel (7, 12, 20), slices 3.5 mm apart."""
    before = np.full((13, 30, 40), 100.0)
    vertebra = np.zeros(before.shape, bool)
    vertebra[2:12, 5:25, 8:32] = True
    grid = np.indices(before.shape).astype(float)
    distance = np.sqrt(((grid[0] - 7) * 3.5) ** 2 + (grid[1] - 12) ** 2 + (grid[2] - 20) ** 2)
    after = before - 40.0 * (distance < 5.0)
    return ReformatRow("planted", before, after, vertebra, (3.5, 1.0, 1.0))


def test_the_centre_is_the_lesions_and_the_figure_has_every_plane(tmp_path):
    row = planted_row()
    assert lesion_centre(row) == (7, 12, 20)
    unchanged = ReformatRow("none", row.before, row.before, row.vertebra, row.spacing)
    assert lesion_centre(unchanged) == (6, 14, 20)  # no change: the vertebra's centre (6.5, 14.5, 19.5) rounded
    output = reformat_figure([row, unchanged], tmp_path / "figure.png", title="planted")
    with Image.open(output) as image:
        width, height = image.size
    assert width > 1000 and height > 500
