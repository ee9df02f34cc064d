"""Write synthesis requests: every normal case of a split, once per lesion class, with a text of that class
taken from the training cases (the level replaced by the normal case's own).

    python scripts/synthesis_requests.py --datalist demo/data/datalist.json --output demo/data/requests.json
"""

from __future__ import annotations

import fire

from bundle.balancing.synthesis_requests import write_demo_requests


def main(
    datalist: str, output: str, split: str = "test", classes: tuple[str, ...] = ("benign", "malignant"), seed: int = 0
) -> None:
    path = write_demo_requests(datalist, output, split, classes, seed)
    print(f"requests: {path}")


if __name__ == "__main__":
    fire.Fire(main)
