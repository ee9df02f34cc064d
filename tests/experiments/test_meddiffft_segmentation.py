"""MedDiff-FT's segmentation experiment: the arms' data (copy-paste inside the host, one step budget, a test list
nothing trains on), the verdict rule, the report section, and the component checks M2-M5 on hand-made cases, each
able to fail."""

from __future__ import annotations

import math

import pytest
import torch

from bundle.engines.meddiffft_pairs import CopyPastePredictor
from bundle.experiments.meddiffft_segmentation import (
    ARMS,
    BEGIN,
    END,
    ExperimentError,
    arm_datalist,
    optimizer_steps,
    parse_config,
    segmentation_budget,
    settings_for,
    verdict,
    write_report,
)
from bundle.metrics.meddiffft_checks import (
    erosion_check,
    filter_check,
    guide_check,
    in_plane_erosion,
    mask_generator_check,
)
from bundle.metrics.quality_filter import FeatureSpaceFilter, QualityCheck
from bundle.metrics.segmentation import segmentation_figures
from bundle.networks.meddiffft_mask_generator import RealMaskSampler

S = 32


def disc(center: tuple[float, float], radius: float, size: int = S) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return (((rows - center[0]) ** 2 + (cols - center[1]) ** 2) <= radius**2).float()


def box(top: int, left: int, height: int, width: int, size: int = S) -> torch.Tensor:
    mask = torch.zeros(size, size)
    mask[top : top + height, left : left + width] = 1
    return mask


# ------------------------------------------------------------------------------------------------ the arms' data
def cases(k: int = 2) -> dict[str, list[dict]]:
    lesions = [{"case_id": f"lesion_{i}", "label": "benign"} for i in range(4)]
    return {
        "normal": [{"case_id": f"normal_{i}", "label": "normal"} for i in range(3)],
        "k": lesions[:k],
        "all": lesions,
        "held_out_lesions": lesions[k:],
        "test": [{"case_id": "test_0", "label": "normal"}, {"case_id": "test_1", "label": "malignant"}],
    }


def test_each_arm_trains_on_its_cases_and_never_on_the_test_list():
    split = cases()
    pair = {"case_id": "normal_0_meddiffft_0000", "host_case": "normal_0", "synthetic": True, "label": "benign"}
    ids = {
        arm: [e["case_id"] for e in arm_datalist(arm, split, [pair] if ARMS[arm]["pairs"] else [])["training"]]
        for arm in ARMS
    }
    assert ids["k_real"] == ids["augmentation"] == ["normal_0", "normal_1", "normal_2", "lesion_0", "lesion_1"]
    assert ids["all_real"] == [*ids["k_real"][:3], "lesion_0", "lesion_1", "lesion_2", "lesion_3"]
    for arm in ("meddiffft", "copy_paste", "no_filter", "no_foundation"):
        assert ids[arm] == [*ids["k_real"], "normal_0_meddiffft_0000"]
    assert all(arm_datalist(a, split, [])["test"] == split["test"] for a in ("k_real", "all_real"))

    with pytest.raises(ExperimentError, match="test_1"):  # a test case among the training cases
        arm_datalist("k_real", {**split, "k": [*split["k"], split["test"][1]]}, [])
    with pytest.raises(ExperimentError, match="test_0"):  # a pair painted into a test case
        arm_datalist("meddiffft", split, [{**pair, "host_case": "test_0"}])
    with pytest.raises(ExperimentError, match="real cases only"):
        arm_datalist("k_real", split, [pair])


def test_every_arm_gets_the_same_optimiser_step_budget():
    settings = settings_for("quick")
    budget = segmentation_budget(settings)
    steps = set()
    for spec in ARMS.values():
        files = ["segment.json", *(["segment_augmentation.json"] if spec.get("augment") else [])]
        steps.add(parse_config(files, budget).get_parsed_content("optimizer_steps"))
    assert steps == {optimizer_steps(settings)} == {25 * 40}
    with pytest.raises(ExperimentError, match="2 seeds"):
        settings_for("quick", seeds=[0])


def test_the_augmentation_moves_image_and_label_together():
    augment = parse_config(["segment.json", "segment_augmentation.json"], {}).get_parsed_content("augmentation")
    torch.manual_seed(0)
    lesion = box(10, 6, 8, 14)
    moved = 0
    for seed in range(8):
        augment.set_random_state(seed)
        item = augment({"image": torch.stack([lesion, torch.ones(S, S)]), "label": lesion[None].clone()})
        image, label = torch.as_tensor(item["image"])[0] > 0.5, torch.as_tensor(item["label"])[0] > 0.5
        assert set(torch.unique(torch.as_tensor(item["label"])).tolist()) <= {0.0, 1.0}
        assert float((image & label).sum()) / float((image | label).sum()) > 0.7
        moved += int(not torch.equal(label, lesion > 0.5))
    assert moved >= 4  # it does augment


def test_copy_paste_puts_the_real_lesion_inside_the_host_vertebra():
    host = box(4, 4, 24, 24)  # the vertebral body
    tall, wide = box(2, 10, 12, 4), box(10, 2, 4, 12)
    real_images = [(0.9 * tall)[None], (0.2 * wide + 0.05)[None]]
    sampler = RealMaskSampler([tall, wide], [1.0, 1.0], [host], [1.0], seed=3)
    predictor = CopyPastePredictor((real_images, [tall, wide], [1.0, 1.0]))
    image = torch.full((1, S, S), 0.5) * host
    sources = set()
    for index in range(8):
        drawn = sampler.draw(index).mask
        assert bool((drawn[0] <= host).all())
        pasted = predictor([{"image": image, "lesion_mask": drawn, "case_id": "c"}])[0]
        changed = (pasted - image).abs()[0] > 1e-6
        assert bool((changed <= (drawn[0] > 0.5)).all())  # the host is unchanged outside the drawn lesion
        assert bool((changed <= (host > 0.5)).all())
        rows, columns = int((drawn[0].sum(1) > 0).sum()), int((drawn[0].sum(0) > 0).sum())
        source = 0 if rows > columns else 1  # the drawn mask is the tall or the wide real lesion
        assert predictor.source_of(drawn[0][drawn[0].sum(1) > 0][:, drawn[0].sum(0) > 0] > 0.5) == source
        inside = pasted[0][drawn[0] > 0.5]
        assert float(inside.mean()) == pytest.approx(0.9 if source == 0 else 0.25, abs=0.05)  # its own pixels
        sources.add(source)
    assert sources == {0, 1}


# ------------------------------------------------------------------------------------------------ the verdict
def test_the_verdict_needs_more_than_one_percent_and_the_seed_spread():
    assert verdict((0.50, 0.02), (0.47, 0.01)) == pytest.approx({"difference": 0.03, "margin": 0.02, "met": True})
    assert verdict((0.50, 0.04), (0.47, 0.01))["met"] is False  # within the seed spread
    assert verdict((0.475, 0.001), (0.47, 0.002)) == pytest.approx({"difference": 0.005, "margin": 0.01, "met": False})
    below = verdict((0.40, 0.01), (0.47, 0.01))
    assert below["difference"] == pytest.approx(-0.07) and below["met"] is False


def report_context(full: list[float], real: list[float]) -> dict:
    def runs(values):
        return {
            s: {
                "dice": v,
                "hd95_mm": 3.0,
                "fp_rate": 0.1,
                "detected": 1.0,
                "iterations": 200,
                "training": {"real_cases": 10, "synthetic_cases": 0},
            }
            for s, v in enumerate(values)
        }

    return {
        "results": {"k_real": runs(real), "meddiffft": runs(full)},
        "pairs": {"meddiffft": {"requested": 4, "written": 1, "rejected": 3, "failed": 0}},
        "checks": {
            "check_m2": {"drawn": 4, "passed": False},
            "check_m5": {"M5 (written)": {"pairs": 0, "passed": True}},
        },
        "seconds": {"pretrain": 10.0},
        "wall_seconds": 120.0,
        "settings": settings_for("quick"),
        "command": "python -m bundle.experiments.meddiffft_segmentation --preset quick",
        "cases": {"normal": 3, "all": 4, "test": 2},
        "optimizer_steps": 200,
        "machine": "test",
        "created_utc": "now",
    }


def test_the_report_rewrites_its_section_only_and_prints_a_negative_verdict(tmp_path):
    doc = tmp_path / "meddiffft.md"
    doc.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\n## Not built yet\n")
    write_report(doc, report_context([0.40, 0.42, 0.41], [0.47, 0.48, 0.46]))
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("## Not built yet\n")
    assert "old table" not in text and text.count(BEGIN) == 1
    assert "**-0.060**" in text and "**not met**" in text
    assert "**M2** mask generator: **failed**" in text and "- check_m3: not run" in text
    assert "**M5 (written)** erosion raises label precision: **passed**" in text
    write_report(doc, report_context([0.52, 0.53, 0.51], [0.47, 0.48, 0.46]))
    assert "**+0.050**" in doc.read_text() and "**met**" in doc.read_text()


# ------------------------------------------------------------------------------------------------ metrics
def test_segmentation_figures_on_hand_computed_slices():
    target = box(4, 4, 4, 4)  # 16 px
    half = box(4, 4, 2, 4)  # 8 px inside: Dice 2*8/24
    figures = segmentation_figures(
        [half, torch.zeros(S, S), box(0, 0, 1, 1), torch.zeros(S, S)],
        [target, target, torch.zeros(S, S), torch.zeros(S, S)],
        [False, False, True, True],
        pixel_mm=0.5,
    )
    assert figures["dice"] == pytest.approx((2 * 8 / 24 + 0.0) / 2)
    assert figures["detected"] == 0.5 and figures["fp_rate"] == 0.5
    assert figures["hd95_mm"] == pytest.approx(2 * 0.5)  # the target's last two rows are 2 px from the prediction
    assert figures["lesion_slices"] == 2 and figures["normal_slices"] == 2


# ------------------------------------------------------------------------------------------------ M2
class ListSampler:
    def __init__(self, masks):
        self.masks = masks

    def draw(self, index):
        return type("Draw", (), {"mask": self.masks[index][None]})()


def test_m2_fails_copies_of_the_training_masks_and_split_masks():
    real = [disc((10, 10), 4), disc((16, 16), 5), box(5, 5, 8, 10)]
    notched = [disc((12, 12), 3.5 + 0.2 * i) * (1 - box(12, 0, 1, 12)) for i in range(10)]
    novel = [(mask + box(8, 8, 3, 3)).clamp(max=1) for mask in notched]
    assert mask_generator_check(ListSampler(novel), real, 10)["passed"] is True
    copies = mask_generator_check(ListSampler([real[i % 3] for i in range(10)]), real, 10)
    assert copies["novel"] == 0.0 and copies["passed"] is False
    split = [disc((8, 8), 3) + disc((22, 22), 3) for _ in range(10)]
    assert mask_generator_check(ListSampler(split), real, 10)["one_component"] == 0.0
    tiny = mask_generator_check(ListSampler([box(3, 3, 2, 2) for _ in range(10)]), real, 10)
    assert tiny["median_area_ratio"] < 0.5 and tiny["passed"] is False


# ------------------------------------------------------------------------------------------------ M3, M5
def painted_items(change_outside: float = 0.0, ring_only: bool = False):
    from bundle.inferers.guide_mask import GuideMaskSchedule

    schedule = GuideMaskSchedule("shrink", 0.5, 0.6)
    host = box(4, 4, 24, 24)[None]
    items, painted = [], []
    for center in ((12, 12), (18, 16)):
        lesion = disc(center, 4)[None]
        image = torch.full((1, S, S), 0.4)
        distance = ((torch.arange(S)[:, None] - center[0]) ** 2 + (torch.arange(S)[None] - center[1]) ** 2).sqrt()
        change = 0.5 * (1 - distance / 4.5).clamp(min=0)  # fades towards the lesion's edge
        if ring_only:
            change = 0.5 * ((distance > 3) & (distance <= 4)).float()
        result = image + change * lesion
        result[0, 0, 0] += change_outside
        items.append({"image": image, "lesion_mask": lesion, "host_mask": host, "case_id": f"c{center}"})
        painted.append(result)
    return items, painted, schedule


def test_m3_passes_a_blend_that_keeps_the_host_and_fails_one_that_does_not():
    items, painted, schedule = painted_items()
    good = guide_check(items, painted, schedule, steps=10)
    assert good["passed"] is True and good["max_change_outside_final_guide"] == 0.0
    items, painted, schedule = painted_items(change_outside=0.01)
    bad = guide_check(items, painted, schedule, steps=10)
    assert bad["passed"] is False and bad["max_change_outside_final_guide"] == pytest.approx(0.01)


def erosion_pairs(items, painted, erosion_mm: float):
    return [
        (
            (result - item["image"]).abs()[0],
            item["lesion_mask"][0],
            in_plane_erosion(item["lesion_mask"][0][..., None], [1.0, 1.0, 4.0], erosion_mm)[..., 0],
        )
        for item, result in zip(items, painted, strict=True)
    ]


def test_m5_erosion_raises_precision_on_a_fading_lesion_and_fails_on_a_rim_or_a_no_op():
    items, painted, _ = painted_items()
    fading = erosion_check(erosion_pairs(items, painted, 1.0))
    assert fading["passed"] is True and fading["precision_eroded"] > fading["precision_drawn"]
    assert fading["recall_eroded"] <= fading["recall_drawn"] and fading["labels_erosion_left_unchanged"] == 0
    no_op = erosion_check(erosion_pairs(items, painted, 0.9))  # below one pixel: nothing erodes
    assert no_op["passed"] is False and no_op["labels_erosion_left_unchanged"] == 2
    items, painted, _ = painted_items(ring_only=True)
    assert erosion_check(erosion_pairs(items, painted, 1.0))["passed"] is False
    assert erosion_check(erosion_pairs(items, painted, 9.0)) == {"pairs": 2, "dropped": 2, "passed": False}


# ------------------------------------------------------------------------------------------------ M4
class Features:
    def __init__(self, with_texture: bool):
        self.with_texture = with_texture
        self.description = f"hand-made features (texture {with_texture})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        columns = [images[..., 6:-6, 6:-6].mean(dim=(1, 2, 3))]  # away from the border a blur pads
        if self.with_texture:
            columns.append(4 * (images[..., 1:] - images[..., :-1]).abs().mean(dim=(1, 2, 3)))
        return torch.stack(columns, dim=1)


def lesion_slices(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    slices = []
    for _ in range(count):
        stripes = 0.5 + 0.15 * torch.sign(torch.sin(torch.arange(S).float() * 1.6))[None].expand(S, S)
        center = tuple(10 + 12 * float(v) for v in torch.rand(2, generator=generator))
        slices.append((stripes - 0.3 * disc(center, 4) + 0.01 * torch.rand(S, S, generator=generator))[None])
    return slices


def test_m4_keeps_real_slices_and_rejects_noise_and_blur_only_with_features_that_see_them():
    for texture, expected in ((True, True), (False, False)):
        extractor = Features(texture)
        reference = {f"case_{i}": extractor(torch.stack(lesion_slices(1, i))) for i in range(40)}
        fitted = FeatureSpaceFilter.fit(
            {"lesion": reference}, k=3, quantile=1.0, calibration_fraction=0.5, feature_space=extractor.description
        )
        figures = filter_check(QualityCheck(fitted, extractor), lesion_slices(12, 99))
        assert figures["passed"] is expected, figures
        assert figures["noise_rejected"] == 1.0
        if not texture:
            assert figures["blurred_rejected"] < 0.8  # the mean does not change under blur
    assert not math.isnan(figures["threshold"])
