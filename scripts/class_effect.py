"""Measure whether synthesised lesions follow their texts (in-mask intensity change by requested signal).

    python scripts/class_effect.py --requests demo/data/requests.json --synthesis_dir demo/outputs/synthesis \
        --output demo/outputs/class_effect.json --figure demo/outputs/class_effect.png
"""

from __future__ import annotations

import fire

from bundle.experiments.class_effect import format_summary, write_effect_report


def main(requests: str, synthesis_dir: str, output: str, figure: str | None = None, split: str = "test") -> None:
    report = write_effect_report(requests, synthesis_dir, output, figure, split)
    print(format_summary(report))
    print(f"report: {output}" + (f"; figure: {figure}" if figure else ""))


if __name__ == "__main__":
    fire.Fire(main)
