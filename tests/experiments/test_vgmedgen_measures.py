"""VG-MedGen's evidence measures on hand-made cases whose answer is known: text-control prompt pairs and how a crop
answers them, the style swap's measures, the classifier arms' training lists, the verdict rule and the arm list."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bundle.experiments import vgmedgen_measures as m
from bundle.experiments.runner import ExperimentError
from bundle.experiments.vgmedgen_evidence import PRESETS, classifier_arms, settings_for, step_groups
from bundle.metrics.segmentation import slice_dice

CAPTION = (
    "Malignant L3 vertebra. Anatomy: 21 mm oval lesion with well-defined margins in the anterior L3 vertebral body. "
    "Style: mildly hypointense to the surrounding marrow (13 %), homogeneous."
)


def crop(vertebra_value: float, lesion_value: float | None = None, lesion_side: int = 0) -> tuple[torch.Tensor, ...]:
    """A 16 x 16 crop: background 0.1, a 10 x 10 vertebra, optionally a square lesion of ``lesion_side``."""
    image = torch.full((1, 16, 16), 0.1)
    image[0, 3:13, 3:13] = vertebra_value
    if lesion_value is not None and lesion_side:
        image[0, 5 : 5 + lesion_side, 5 : 5 + lesion_side] = lesion_value
    segmentation = torch.zeros(16, 16, dtype=torch.long)
    segmentation[3:13, 3:13] = 1
    return image, segmentation


def test_prompt_pairs_change_exactly_one_phrase():
    pairs = m.control_pairs([CAPTION, "Normal L2 vertebra. Anatomy: no focal lesion. Style: homogeneous."], 5)
    assert len(pairs["signal"]) == len(pairs["size"]) == 1  # the normal caption has neither phrase
    low, high = pairs["signal"][0]
    assert "hypointense" in low and "hyperintense" in high and "hypointense" not in high
    assert low.replace("hypointense", "X") == high.replace("hyperintense", "X")
    small, large = pairs["size"][0]
    assert "6 mm oval" in small and "24 mm oval" in large and "21 mm" not in small + large
    assert small.replace("6 mm", "X") == large.replace("24 mm", "X")
    with pytest.raises(ValueError, match="no size"):
        m.with_size("Normal L2 vertebra.", 10)


def test_text_control_measures_follow_the_known_direction():
    bright, seg = crop(0.5, 0.9, 4)
    dark, _ = crop(0.5, 0.2, 4)
    assert m.signal_measure(bright, seg) > m.signal_measure(dark, seg)
    small, _ = crop(0.5, 0.9, 2)
    large, _ = crop(0.5, 0.2, 6)  # a dark lesion: the area counts whatever the signal
    assert m.lesion_area_measure(large, seg) > m.lesion_area_measure(small, seg) > 0
    assert m.lesion_area_measure(crop(0.5)[0], seg) == 0.0
    # no vertebra found: the whole crop is the region
    assert m.signal_measure(bright, torch.zeros(16, 16, dtype=torch.long)) == pytest.approx(float(bright.mean()))
    assert m.moved_fraction([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 3.0, 5.0]) == 0.5  # a tie is a miss
    with pytest.raises(ValueError):
        m.moved_fraction([], [])


def test_style_swap_measures():
    a = torch.zeros(8, 8, dtype=torch.bool)
    a[2:6, 2:6] = True
    b = torch.zeros(8, 8, dtype=torch.bool)
    b[2:6, 4:8] = True
    assert slice_dice(a, a) == 1.0 and slice_dice(a, b) == pytest.approx(0.5)
    assert slice_dice(a & False, a & False) == 1.0
    own, donor = [0.2, 0.8, 0.5], [0.8, 0.2, 0.51]
    assert m.toward_donor(own, [0.6, 0.9, 0.9], donor) == 0.5  # the third pair is too close to count
    assert math.isnan(m.toward_donor([0.5], [0.9], [0.5]))


def entries(labels):
    return [{"case_id": f"{label}_{i}", "label": label} for i, label in enumerate(labels)]


def test_arms_are_assembled_from_the_real_list_and_the_generated_crops():
    real = entries(["normal"] * 6 + ["benign"] * 3 + ["malignant"])
    generated = [{**e, "synthetic": True} for e in entries(["normal"] * 4 + ["benign"] * 5 + ["malignant"] * 3)]
    assert m.arm_training("real", real, None) == real == m.arm_training("oversampling", real, generated)
    assert m.arm_training("synthetic_only", real, generated) == generated
    filled = m.arm_training("full", real, generated)
    counts = m.class_counts(filled)
    assert counts == {
        "normal": {"real": 6, "synthetic": 0},
        "benign": {"real": 3, "synthetic": 3},
        "malignant": {"real": 1, "synthetic": 3},  # only 3 generated: fewer than the 5 needed
    }
    assert filled[: len(real)] == real
    assert m.predicted_classes([[3, 0, 0], [2, 0, 0], [1, 0, 0]]) == 1
    assert m.predicted_classes([[3, 0, 0], [1, 1, 0], [0, 0, 2]]) == 3
    with pytest.raises(ValueError, match="needs generated"):
        m.arm_training("no_intensity", real, None)


def test_classifier_arms_and_presets():
    assert classifier_arms(["full", "no_intensity"]) == [
        "real",
        "oversampling",
        "full",
        "no_intensity",
        "synthetic_only",
    ]
    assert len(PRESETS["default"]["seeds"]) >= 3
    assert settings_for("quick", seeds=[3])["seeds"] == [3]
    with pytest.raises(ExperimentError, match="generators"):
        settings_for("quick", generators=["no_intensity"])
    with pytest.raises(ExperimentError, match="unknown"):
        settings_for("quick", epochs=3)


def test_verdict_rule():
    holds, line = m.verdict("A above B", (0.8, 0.05), (0.6, 0.05))
    assert holds and "(clearly)" in line
    holds, line = m.verdict("A above B", (0.62, 0.05), (0.6, 0.05))
    assert holds and "within the seed spread" in line
    holds, line = m.verdict("A above B", (0.5, 0.05), (0.6, 0.05))
    assert not holds and "**no**" in line and "-0.100" in line
    holds, _ = m.verdict("A's FID below B's", (10.0, 1.0), (20.0, 1.0), higher=False)
    assert holds
    assert not m.verdict("x", (float("nan"), 0.0), (1.0, 0.0))[0]
    holds, line = m.verdict("A above B", (0.8, 0.0), (0.6, 0.0), seeds=1)
    assert holds and "one seed: no spread" in line and "clearly" not in line
    assert m.threshold_verdict("t", (0.8, 0.1), 0.8)[0] and not m.threshold_verdict("t", (0.79, 0.1), 0.8)[0]


def test_attribute_targets_of_a_lesion_and_a_normal_case():
    lesion = {
        "lesion_class": "malignant",
        "size_mm": 16,
        "height_loss_percent": 20,
        "position_ap": "anterior",
        "position_si": "inferior",
        "signal": "hypointense",
        "contrast": 0.3,
    }
    assert m.attribute_targets(lesion) == {
        "size_mm": 16.0,
        "height_loss": 20.0,
        "position_ap": 1.0,
        "position_si": -1.0,
        "signal": -1.0,
        "signed_contrast": pytest.approx(-0.3),
    }
    assert set(m.attribute_targets({"lesion_class": "normal"}).values()) == {0.0}


def test_step_times_are_summed_over_seeds():
    groups = step_groups({"data": 3.0, "stage_g_full_seed0": 10.0, "stage_g_full_seed1": 12.0, "stage_v_seed0": 1.0})
    assert groups == {"data": 3.0, "stage_g_full": 22.0, "stage_v": 1.0}


def test_the_doc_section_is_rewritten_from_finished_steps_and_the_rest_kept(tmp_path):
    from bundle.experiments.runner import Steps
    from bundle.experiments.vgmedgen_evidence import SECTION_END, SECTION_START, write_section

    work, doc = tmp_path / "work", tmp_path / "doc.md"
    settings = settings_for("quick", seeds=[0, 1], generators=["full", "no_intensity"])
    steps = Steps(work)
    probes = {"visual anatomy": {"anatomy": 0.6, "style": 0.1}, "visual style": {"anatomy": 0.1, "style": 0.5}}
    for seed in (0, 1):
        table = {kind: dict.fromkeys([*m.ANATOMY_ATTRIBUTES, *m.STYLE_ATTRIBUTES], 0.2) for kind in probes}
        details = {
            "vertebra_dice": 0.9,
            "lesion_dice": 0.1,
            "swap_anatomy_dice": 0.85,
            "swap_toward_donor": 0.7,
            "probes": table,
            "probe_means": probes,
        }
        steps.run(f"disentanglement_seed{seed}", lambda d=details: d)
        for name, fid in (("full", 1.0 + seed), ("no_intensity", 5.0 + seed)):
            generated = {
                "written": 10,
                "failed": 0,
                "fid_domain": fid,
                "kid_domain": 0.1,
                "fid_clip": 0.2,
                "kid_clip": 0.01,
                "hfd": 0.3,
                "control_signal": 0.9,
                "control_size": 0.5,
                "named_extractor": "tiny CLIP",
            }
            steps.run(f"generate_{name}_seed{seed}", lambda g=generated: g)
    for seed, f1 in ((0, 0.6), (1, 0.62)):
        for arm, value in (("real", f1 - 0.2), ("full", f1)):
            folder = work / "classify" / arm / f"seed_{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(
                json.dumps({"f1": value, "recall": value, "auc": 0.8, "confusion_matrix": [[2, 1], [0, 3]]})
            )
            steps.run(
                f"classify_{arm}_seed{seed}", lambda: {"training_counts": {"normal": {"real": 6, "synthetic": 0}}}
            )
    doc.write_text("# Title\n\nbefore\n\n" + SECTION_START + "\nold numbers\n" + SECTION_END + "\n\nafter\n")
    for _ in range(2):  # rewriting twice leaves one section
        write_section(doc, work, settings, "python -m bundle.experiments.vgmedgen_evidence --preset quick", 60.0)
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith("\nafter\n") and "old numbers" not in text
    assert text.count(SECTION_START) == 1 and "--preset quick" in text
    assert "visual anatomy vector predicts anatomy attributes better than style attributes (mean R²): **yes**" in text
    assert "text control, signal phrase, full model (>= 80 % of pairs): **yes**" in text
    assert "text control, size phrase, full model (>= 80 % of pairs): **no**" in text
    assert "full model's domain FID below without intensity loss: **yes** (clearly)" in text
    assert "macro F1 of real + VG-MedGen above real only: **yes** (clearly)" in text
    assert "| real + VG-MedGen | 2 | normal 6 | 0.610 ± 0.014 |" in text and "| 2, 2 |" in text
