"""Prepared datalists (VerTumor-like and RSNA) through the inference preprocessing of configs/inference.json."""

from __future__ import annotations

import json

from bundle.preparation.patient_split import SPLITS
from bundle.preparation.prepared import write_prepared
from bundle.preparation.rsna import collect_rsna
from bundle.preparation.vertumor import collect_vertumor
from tests.helpers.prepare_cli import inference_preprocessing


def test_inference_config_preprocessing_runs_on_prepared_datalists(rsna, vertumor, tmp_path):
    for name, prepared in (("rsna", collect_rsna(rsna[0])), ("vertumor", collect_vertumor(vertumor[0]))):
        files = write_prepared(prepared, tmp_path / name)
        for split in SPLITS:
            results = inference_preprocessing(files.datalist, split)
            assert len(results) == len(json.loads(files.datalist.read_text())[split])
            for items in results:
                items = items if isinstance(items, list) else [items]
                assert items and all(tuple(item["soft_mask"].shape[-2:]) == (48, 48) for item in items)
