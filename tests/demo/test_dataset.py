"""The procedural spine-MRI demo data (bundle.demo) and scripts/demo_data.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bundle.demo.cases import PhantomCase, generate_case
from bundle.demo.dataset import assign_classes, class_counts, generate_dataset, stratified_split
from bundle.demo.labels import LESION_CLASSES, NEIGHBOUR_BONE_LABELS, VERTEBRA_LABELS
from tests.helpers.paths import REPO

SEED = 7
NUM_CASES = 8
ENTRY_KEYS = {
    "case_id",
    "image",
    "vertebra_seg",
    "lesion_seg",
    "label",
    "class_index",
    "level",
    "mask_labels",
    "text",
    "attributes",
}
TOTALSEGMENTATOR_V2 = {"L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "S1": 26}


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def all_entries(datalist: dict) -> list[dict]:
    return sorted([*datalist["training"], *datalist["test"]], key=lambda entry: entry["case_id"])


def load_array(folder: Path, relative_path: str) -> np.ndarray:
    return np.asarray(nib.load(folder / relative_path).dataobj)


def lesion_contrast(case: PhantomCase) -> float:
    """Mean image signal in the lesion relative to the median of the rest of the same vertebra's bone."""
    lesion = case.lesion.astype(bool)
    vertebra = ndimage.binary_erosion(case.vertebrae == VERTEBRA_LABELS[case.attributes.level], np.ones((3, 3, 1)))
    surrounding = vertebra & ~ndimage.binary_dilation(lesion, np.ones((5, 5, 3)))
    return float(case.image[lesion].mean() / np.median(case.image[surrounding]) - 1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("demo")
    return folder, generate_dataset(folder, NUM_CASES, SEED)


@pytest.fixture(scope="module")
def lesion_cases() -> dict[tuple[str, float], list[PhantomCase]]:
    """Three cases per (lesion class, difficulty); the same (seed, index) across difficulties."""
    return {
        (lesion_class, difficulty): [generate_case(SEED, index, lesion_class, difficulty) for index in range(3)]
        for lesion_class in ("benign", "malignant")
        for difficulty in (0.1, 0.5, 0.9)
    }


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(dataset, tmp_path):
    folder, _ = dataset
    generate_dataset(tmp_path / "again", NUM_CASES, SEED)
    assert file_hashes(tmp_path / "again") == file_hashes(folder)
    generate_dataset(tmp_path / "other", 2, SEED + 1)
    other, first = file_hashes(tmp_path / "other"), file_hashes(folder)
    for name in ("images/case_000.nii.gz", "images/case_001.nii.gz", "vertebrae/case_000.nii.gz", "datalist.json"):
        assert other[name] != first[name], name


def test_case_k_is_the_same_whatever_the_number_of_cases(dataset, tmp_path):
    folder, _ = dataset
    generate_dataset(tmp_path, 3, SEED)
    fewer = {name: digest for name, digest in file_hashes(tmp_path).items() if name != "datalist.json"}
    assert len(fewer) == 9
    full = file_hashes(folder)
    assert all(full[name] == digest for name, digest in fewer.items())


def test_datalist_entries_have_the_required_keys_and_files(dataset):
    folder, datalist = dataset
    assert json.loads((folder / "datalist.json").read_text()) == datalist
    assert datalist["labels"] == {"normal": 0, "benign": 1, "malignant": 2}
    assert datalist["vertebra_labels"] == TOTALSEGMENTATOR_V2 == VERTEBRA_LABELS
    assert datalist["seed"] == SEED and datalist["difficulty"] == 0.5
    entries = all_entries(datalist)
    assert [entry["case_id"] for entry in entries] == [f"case_{i:03d}" for i in range(NUM_CASES)]
    for entry in entries:
        assert ENTRY_KEYS <= entry.keys()
        for key, folder_name in (("image", "images"), ("vertebra_seg", "vertebrae"), ("lesion_seg", "lesions")):
            assert entry[key] == f"{folder_name}/{entry['case_id']}.nii.gz"
            assert (folder / entry[key]).is_file()
        assert entry["class_index"] == LESION_CLASSES[entry["label"]]
        assert entry["level"] in ("L1", "L2", "L3", "L4", "L5")
        assert entry["mask_labels"] == [TOTALSEGMENTATOR_V2[entry["level"]]]
        assert entry["attributes"]["lesion_class"] == entry["label"]
        assert entry["attributes"]["level"] == entry["level"]


def test_volumes_are_oblique_anisotropic_sagittal_stacks(dataset):
    folder, datalist = dataset
    for entry in all_entries(datalist):
        image = nib.load(folder / entry["image"])
        header = image.header
        assert image.get_data_dtype() == np.int16
        assert nib.aff2axcodes(image.affine) == ("P", "I", "R")
        zooms = np.array(header.get_zooms())
        directions = image.affine[:3, :3] / zooms
        assert abs(directions[0, 2]) > 0.99, "the third array axis must run left-right (one sagittal slice each)"
        assert np.abs(directions - np.round(directions)).max() > 1e-3, "the affine should be oblique"
        assert np.linalg.norm(image.affine[:3, 3]) > 10
        assert 3.5 <= zooms[2] <= 4.0 and 0.95 <= zooms[0] <= 1.3 and 0.95 <= zooms[1] <= 1.3
        assert abs(zooms[0] - zooms[1]) > 0.05
        assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
        np.testing.assert_allclose(image.get_qform(), image.get_sform(), atol=1e-4)
        assert 9 <= image.shape[2] <= 13 and np.prod(image.shape) < 400_000
        for key in ("vertebra_seg", "lesion_seg"):
            mask = nib.load(folder / entry[key])
            assert mask.get_data_dtype() == np.uint8 and mask.shape == image.shape
            np.testing.assert_allclose(mask.affine, image.affine)


def test_vertebra_labels_are_the_totalsegmentator_values_stacked_top_to_bottom(dataset):
    folder, datalist = dataset
    for entry in all_entries(datalist):
        labels = load_array(folder, entry["vertebra_seg"])
        present = set(np.unique(labels).tolist())
        assert set(TOTALSEGMENTATOR_V2.values()) <= present
        assert present <= {0, *TOTALSEGMENTATOR_V2.values(), *NEIGHBOUR_BONE_LABELS.values()}
        # axis 1 runs superior -> inferior, so L1 comes first and S1 last.
        mean_rows = [np.nonzero(labels == TOTALSEGMENTATOR_V2[name])[1].mean() for name in TOTALSEGMENTATOR_V2]
        assert mean_rows == sorted(mean_rows)
        for name in ("L1", "L2", "L3", "L4", "L5"):
            slices = np.flatnonzero((labels == TOTALSEGMENTATOR_V2[name]).any(axis=(0, 1)))
            assert len(slices) >= 7, f"{name} should be 3-D (spans {len(slices)} sagittal slices)"


def test_lesion_mask_lies_in_the_vertebra_of_its_level_and_normals_are_empty(dataset):
    folder, datalist = dataset
    for entry in all_entries(datalist):
        lesion = load_array(folder, entry["lesion_seg"])
        if entry["label"] == "normal":
            assert not lesion.any()
            continue
        assert set(np.unique(lesion).tolist()) == {0, 1}
        labels = load_array(folder, entry["vertebra_seg"])
        assert np.mean(labels[lesion > 0] == TOTALSEGMENTATOR_V2[entry["level"]]) >= 0.95


def test_benign_lesions_are_brighter_and_malignant_darker_than_their_marrow(lesion_cases):
    # At difficulty 0.9 a faint lesion may drown in marrow texture; that is the point of the hard setting.
    for (lesion_class, difficulty), cases in lesion_cases.items():
        if difficulty > 0.5:
            continue
        for case in cases:
            contrast = lesion_contrast(case)
            assert (contrast > 0) if lesion_class == "benign" else (contrast < 0), (lesion_class, difficulty, contrast)
            assert case.attributes.signal == ("hyperintense" if lesion_class == "benign" else "hypointense")


def test_higher_difficulty_gives_fainter_smaller_lesions(lesion_cases):
    for lesion_class in ("benign", "malignant"):
        easy, hard = lesion_cases[(lesion_class, 0.1)], lesion_cases[(lesion_class, 0.9)]
        easy_contrast = np.mean([abs(lesion_contrast(case)) for case in easy])
        hard_contrast = np.mean([abs(lesion_contrast(case)) for case in hard])
        assert hard_contrast < 0.6 * easy_contrast, (lesion_class, easy_contrast, hard_contrast)
        assert np.mean([case.lesion.sum() for case in hard]) < np.mean([case.lesion.sum() for case in easy])


def test_normal_and_lesion_variants_of_a_case_share_geometry_and_level(lesion_cases):
    normal = generate_case(SEED, 0, "normal")
    benign = lesion_cases[("benign", 0.5)][0]
    np.testing.assert_array_equal(normal.affine, benign.affine)
    assert normal.attributes.level == benign.attributes.level
    assert not normal.lesion.any()


def test_text_states_the_level_and_the_size_from_the_attributes(dataset):
    _, datalist = dataset
    for entry in all_entries(datalist):
        attributes, text = entry["attributes"], entry["text"]
        assert entry["level"] in text
        if entry["label"] == "normal":
            assert "no focal" in text
        else:
            assert f"{attributes['size_mm']} mm" in text
            assert attributes["signal"] in text


def test_classes_are_imbalanced_prefix_stable_and_split_stratified(dataset):
    _, datalist = dataset
    for split in ("training", "test"):
        assert min(class_counts(datalist[split]).values()) >= 1, split
    many = assign_classes(200, SEED)
    assert assign_classes(NUM_CASES, SEED) == many[:NUM_CASES]
    for name, fraction in (("normal", 0.60), ("benign", 0.25), ("malignant", 0.15)):
        assert abs(many.count(name) / len(many) - fraction) < 0.03
    for seed in range(20):
        classes = assign_classes(8, seed)
        is_test = stratified_split(classes, seed, 0.25)
        for split_flag in (False, True):
            assert {c for c, t in zip(classes, is_test, strict=False) if t == split_flag} == set(LESION_CLASSES), seed


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo_data.py"), *arguments],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--num_cases", "0"), "num_cases must be an integer >= 1"),
        (("--difficulty", "1.5"), "difficulty must be a number in [0, 1]"),
    ],
)
def test_cli_rejects_bad_arguments_with_a_clear_message(tmp_path, arguments, message):
    result = run_cli("--out_dir", str(tmp_path / "out"), *arguments)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_rejects_an_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli("--out_dir", str(blocker / "demo"), "--num_cases", "1")
    assert result.returncode != 0
    assert "cannot write to the output folder" in result.stderr and "Traceback" not in result.stderr


def test_cli_writes_cases_summary_and_figure(tmp_path):
    figure = tmp_path / "figure.png"
    result = run_cli("--out_dir", str(tmp_path / "demo"), "--num_cases", "2", "--seed", "3", "--figure", str(figure))
    assert result.returncode == 0, result.stderr
    assert "[2/2] case_001" in result.stdout and "training:" in result.stdout and "test:" in result.stdout
    assert len(all_entries(json.loads((tmp_path / "demo" / "datalist.json").read_text()))) == 2
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
