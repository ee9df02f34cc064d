"""VG-MedGen attribute captions for a datalist: each case's target vertebra described by anatomy and style
attributes measured from its image and masks (or the datalist's ground-truth ``attributes``, or a CSV of captions
made offline by any vision-language model), written as a new datalist; on the phantom, with the agreement of the
measured attributes with its ground truth (docs/vgmedgen.md). Each entry also gets its working window's extent
(``crop_window_mm``) from the crop preprocessing of ``--window_config`` (its ``slice_settings``; ``''``: none), so
crops generated from the caption keep the source window's field of view.

    python scripts/vgmedgen_captions.py --datalist demo/data/datalist.json \
        --output demo/data/datalist_vgmedgen.json --report demo/outputs/vgmedgen_captions.json
    # --source attributes (ground truth) | --source file --captions_csv captions.csv (columns case_id, caption)
    # --source class (class labels only: the ablation configs/vgmedgen_ablation_class_label.json reads
    #   demo/data/datalist_vgmedgen_class.json)
"""

from __future__ import annotations

import json

import fire
import numpy as np
from monai.bundle import ConfigParser

from bundle.preparation.vgmedgen_captions import caption_datalist
from bundle.transforms.case_to_slices import slice_transform
from bundle.utils.bundle_files import BUNDLE_ROOT
from bundle.utils.files import write_json_atomically


def crop_preprocessing(config: str):
    """The working-window crop of a config's ``slice_settings`` (:func:`slice_transform`)."""
    parser = ConfigParser()
    parser.read_config(config)
    parser["bundle_root"] = str(BUNDLE_ROOT)
    return slice_transform(**parser.get_parsed_content("slice_settings"))


def main(
    datalist: str,
    output: str,
    source: str = "measured",
    captions_csv: str | None = None,
    report: str | None = None,
    window_config: str = str(BUNDLE_ROOT / "configs" / "vgmedgen_train.json"),
) -> None:
    window = crop_preprocessing(window_config) if window_config else None
    result = caption_datalist(datalist, output, source, captions_csv, window=window)
    for split, part in result["splits"].items():
        print(f"{split}: {part['captioned']} captioned, {len(part['failures'])} failed")
        for failure in part["failures"]:
            print(f"  {failure['case_id']}: {failure['error']}")
    for name, agreement in result.get("fidelity", {}).items():
        if name == "size_errors_mm":
            print(f"  size error (measured - ground truth), median: {float(np.median(agreement)):.1f} mm")
        elif name == "median_size_error_mm":
            print("  median size error by class: " + ", ".join(f"{c} {v:+.1f} mm" for c, v in agreement.items()))
        elif agreement["of"]:
            print(f"  {name}: {agreement['agree']} of {agreement['of']} ({100 * agreement['fraction']:.0f} %)")
    if report:
        write_json_atomically(report, result)
    print(json.dumps({"output": output, "report": report}))


if __name__ == "__main__":
    fire.Fire(main)
