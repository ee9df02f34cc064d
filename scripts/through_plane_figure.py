"""A synthetic lesion seen through-plane: sagittal, coronal and axial reformats of one request's synthetic volume
(one row per synthesis folder) and, with a phantom ``--datalist``, of the phantom's real lesion of the same class
nearest the text's size, each with its change (definitions: docs/text_adherence.md).

    python scripts/through_plane_figure.py --requests demo/data/requests.json --case_id case_000_malignant \
        --runs "{'coherent': 'demo/outputs/synthesis'}" --datalist demo/data/datalist.json \
        --output docs/through_plane.png
"""

from __future__ import annotations

import fire

from bundle.experiments.through_plane_figure import reformat_figure, request_rows


def main(requests: str, case_id: str, runs: dict, output: str, datalist: str | None = None) -> None:
    rows = request_rows(requests, case_id, runs, datalist)
    print(f"figure: {reformat_figure(rows, output)}")


if __name__ == "__main__":
    fire.Fire(main)
