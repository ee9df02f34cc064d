"""Does each synthesised lesion follow its text (signal, size, location), and is it coherent through-plane? Per
request and per requested signal, and with ``--datalist`` (a demo phantom datalist) the same measure on the
phantom's real lesions, each against its lesion-free twin, as the reference (definitions: docs/text_adherence.md).

    python scripts/text_adherence.py --requests demo/data/requests.json --synthesis_dir demo/outputs/synthesis \
        --datalist demo/data/datalist.json --output demo/outputs/text_adherence.json \
        --figure demo/outputs/text_adherence.png
"""

from __future__ import annotations

import fire

from bundle.experiments.text_adherence import format_summary, write_adherence_report


def main(
    output: str,
    requests: str | None = None,
    synthesis_dir: str | None = None,
    datalist: str | None = None,
    figure: str | None = None,
    split: str = "test",
) -> None:
    report = write_adherence_report(output, requests, synthesis_dir, figure, split, datalist)
    print(format_summary(report))
    print(f"report: {output}" + (f"; figure: {figure}" if figure else ""))


if __name__ == "__main__":
    fire.Fire(main)
