"""The review gallery of a large run: its size and its load time in headless Chromium, for a page of ``--num_cases``
rows repeated from a real run's cases (``bundle/experiments/gallery_scale.py``; figures in docs/README.md).

    python scripts/gallery_scale.py --run_dir demo/outputs/synthesis --output_dir /tmp/gallery_1000 \
        [--num_cases 1000] [--result gallery_scale.json]
"""

from __future__ import annotations

import json

import fire

from bundle.experiments.gallery_scale import gallery_scale
from bundle.utils.files import write_json_atomically


def main(run_dir: str, output_dir: str, num_cases: int = 1000, result: str | None = None) -> None:
    figures = gallery_scale(run_dir, output_dir, num_cases)
    print(json.dumps(figures, indent=2))
    if result:
        write_json_atomically(result, figures)


if __name__ == "__main__":
    fire.Fire(main)
