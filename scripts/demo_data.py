"""Generate the procedural spine-MRI demo data set: NIfTI volumes, vertebra and lesion masks, datalist.json.

Usage (from the repository root)::

    python scripts/demo_data.py --out_dir demo --num_cases 24 --seed 0 [--difficulty 0.5]
        [--test_fraction 0.25] [--class_fractions "[0.6,0.25,0.15]"] [--figure docs/demo_cases.png]

The same arguments always write byte-identical files. See ``bundle.demo`` for the geometry, anatomy,
lesion classes and what ``difficulty`` changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import fire

from bundle.demo.dataset import DEFAULT_CLASS_FRACTIONS, class_counts, generate_dataset
from bundle.demo.overview_figure import write_overview_figure


def _summary(split: str, entries: Sequence[Mapping]) -> str:
    counts = ", ".join(f"{name} {count}" for name, count in class_counts(entries).items())
    return f"{split}: {len(entries)} cases ({counts})"


def main(
    out_dir: str,
    num_cases: int = 24,
    seed: int = 0,
    difficulty: float = 0.5,
    test_fraction: float = 0.25,
    class_fractions: Mapping[str, float] | Sequence[float] = tuple(DEFAULT_CLASS_FRACTIONS.values()),
    figure: str | None = None,
) -> None:
    """Write ``num_cases`` phantom cases and ``datalist.json`` to ``out_dir``.

    Args:
        out_dir: output folder (created if needed).
        num_cases: number of cases, at least 1 (from 8 on every class is in both splits).
        seed: non-negative integer; case k depends only on (seed, k, its class, difficulty).
        difficulty: 0 (large, high-contrast lesions, little noise) to 1 (small, faint lesions, strong noise,
            bias and marrow texture, more lesion-like incidental findings).
        test_fraction: share of each class put in the test split, in [0, 1).
        class_fractions: normal, benign, malignant fractions (list or {class: fraction}).
        figure: optional PNG path for an overview of a few cases.
    """
    try:
        datalist = generate_dataset(
            out_dir,
            num_cases,
            seed,
            difficulty=difficulty,
            test_fraction=test_fraction,
            class_fractions=class_fractions,
            progress=print,
        )
        print(_summary("training", datalist["training"]))
        print(_summary("test", datalist["test"]))
        print(f"datalist: {out_dir}/datalist.json")
        if figure:
            print(f"figure: {write_overview_figure(out_dir, datalist, figure)}")
    except (ValueError, OSError) as error:
        raise SystemExit(f"demo_data.py: error: {error}") from None


if __name__ == "__main__":
    fire.Fire(main)
