"""Show what each profile's model grid makes of the shared real scans: a figure and a Markdown table.

    python scripts/model_grid_figure.py --shared_dir ../shared/data --figure docs/model_grid.png

For each scan the table gives the native in-plane spacing, the region the model sees (mm), the model pixel and the
enlargement (native pixels per model pixel) of the ``tiny`` grid (``configs/inference.json``), the ``sd15`` grid
(``+ configs/sd15_inference.json``) and, for comparison, the ``sd15`` grid before issue 12 (the tiny profile's
1-mm window resized to 512 px). The figure shows the middle selected slice natively (yellow: the soft mask at 0.1)
and on the two 512-px grids.
"""

from __future__ import annotations

from pathlib import Path

import fire
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from monai.bundle import ConfigParser

from bundle.transforms.model_grid import grid_geometry
from bundle.utils.bundle_files import BUNDLE_ROOT, CONFIGS_DIR

GRIDS = {
    "tiny": (["inference.json"], {}),
    "sd15 (whole slice, native spacing)": (["inference.json", "sd15_inference.json"], {}),
    "1-mm window at 512 px (sd15 before issue 12)": (["inference.json"], {"spatial_size": 512}),
}


def shared_scans(shared_dir: Path) -> list[dict]:
    """One datalist entry per shared scan, each with its own soft-mask source."""
    return [
        {
            "case_id": "sct_t2 (C3 cord level)",
            "image": shared_dir / "sct_t2/t2.nii.gz",
            "vertebra_seg": shared_dir / "sct_t2/t2_seg-manual_labeled.nii.gz",
            "mask_labels": [3],
        },
        {
            "case_id": "sct_t2 fake lesion",
            "image": shared_dir / "sct_t2/t2_fake_lesion.nii.gz",
            "vertebra_seg": shared_dir / "sct_t2/t2_fake_lesion_lesion_seg.nii.gz",
            "mask_labels": [1],
        },
        {
            "case_id": "TotalSegmentator MR (vertebrae)",
            "image": shared_dir / "totalseg/mr/example_mr_sm.nii.gz",
            "vertebra_seg": shared_dir / "totalseg/mr/example_seg_mr.nii.gz",
            "mask_labels": [19],
        },
        {
            "case_id": "TotalSegmentator CT DICOM (T12)",
            "image": shared_dir / "totalseg/ct_dicom",
            "vertebra_seg": shared_dir / "totalseg/ct_dicom_seg.nii.gz",
            "mask_labels": [32],
        },
    ]


def preprocessing(config_files: list[str], overrides: dict):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS_DIR / name) for name in config_files])
    parser.update({"bundle_root": str(BUNDLE_ROOT), **overrides})
    return parser.get_parsed_content("preprocessing")


def main(shared_dir: str = str(BUNDLE_ROOT.parent / "shared" / "data"), figure: str = "docs/model_grid.png") -> None:
    scans = shared_scans(Path(shared_dir))
    pipelines = {name: preprocessing(*setting) for name, setting in GRIDS.items()}
    print("| scan | native slice (px, mm/px) | grid | region seen (mm) | model pixel (mm) | enlargement |")
    print("| --- | --- | --- | --- | ---: | ---: |")
    axes = plt.subplots(len(scans), 3, figsize=(9, 3 * len(scans)), squeeze=False)[1]
    for row, scan in enumerate(scans):
        entry = {**{k: str(v) if isinstance(v, Path) else v for k, v in scan.items()}, "text": "lesion"}
        for name, pipeline in pipelines.items():
            items = pipeline(dict(entry))
            item = items[len(items) // 2]
            g = grid_geometry(item)
            print(
                f"| {scan['case_id']} | {' x '.join(map(str, g['native_shape']))}, "
                f"{' x '.join(f'{s:g}' for s in g['native_spacing_mm'])} | {name} | "
                f"{' x '.join(f'{s:g}' for s in g['window_mm'])} | {g['model_pixel_mm']:.3f} | {g['upsampling']:.1f}x |"
            )
            if name == "tiny":
                spacing = g["native_spacing_mm"]
                axes[row][0].imshow(item["native_image"][0], cmap="gray", aspect=spacing[0] / spacing[1])
                axes[row][0].contour(item["native_soft_mask"][0], levels=[0.1], colors="yellow", linewidths=0.8)
                axes[row][0].set_title(
                    f"{scan['case_id']}\nnative {' x '.join(map(str, g['native_shape']))} px", fontsize=8
                )
            else:
                column = 1 if name.startswith("sd15") else 2
                axes[row][column].imshow(item["image"][0], cmap="gray", vmin=0, vmax=1)
                axes[row][column].set_title(
                    f"{name}\n{g['model_pixel_mm']:.3f} mm/px, {g['upsampling']:.1f}x", fontsize=8
                )
    for axis in axes.flat:
        axis.axis("off")
    plt.tight_layout()
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    plt.savefig(figure, dpi=110)
    print(f"figure: {figure}")


if __name__ == "__main__":
    fire.Fire(main)
