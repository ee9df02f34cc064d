"""VG-MedGen's evidence (issue 17) in one command: the paper's questions on the phantom, several seeds, and the
results section of ``docs/vgmedgen.md`` rewritten from what ran.

    python -m bundle.experiments.vgmedgen_evidence --preset quick|default [--work_dir runs/vgmedgen_evidence]
        [--doc docs/vgmedgen.md] [--seeds 0,1,2] [--report_only]

Steps (:mod:`bundle.experiments.runner`: each runs once, a killed run resumes, one failed seed does not lose the
others):

1. data: an imbalanced training set and a separate class-balanced test set of the phantom
   (:func:`bundle.experiments.downstream.make_data`), captioned from measurements and from the class label only
   (the ablation); caption fidelity against the phantom's ground truth.
2. real crops: the classifier's working windows of both lists with their anatomy labels and attributes, and a
   *domain extractor* (a small CNN classifier trained on the real training crops; its penultimate features) for
   FID / KID next to the named one (the tiny medical CLIP's image tower: random-initialised, frozen).
3. per seed: stage V, stage T (and stage T on class captions), stage G for the full model and each ablation
   (stage V and T are shared by the ablations that do not change them).
4. per seed, stage V and T: the head's Dice, the style swap, the linear probes of visual and text vectors.
5. per seed and generator: crops generated from the training captions (each disease class filled up to the
   normal count; :class:`bundle.engines.vgmedgen_generation.CaptionGenerationJob` through
   ``configs/vgmedgen_inference.json``), FID / KID / HFD against the real test crops, and text control.
6. classifier (``configs/classify.json``) per arm and seed; 7. the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from bundle.experiments import vgmedgen_measures as measures
from bundle.experiments.runner import (
    ExperimentError,
    Steps,
    cell,
    claim_work_dir,
    mean_std,
    preset_settings,
    run_config_workflow,
    seeded_runs,
)
from bundle.metrics.segmentation import slice_dice
from bundle.utils.bundle_files import BUNDLE_ROOT, common_settings
from bundle.utils.files import write_json_atomically

logger = logging.getLogger(__name__)

GENERATORS: dict[str, dict[str, object]] = {
    "full": {"title": "VG-MedGen (full)", "configs": [], "captions": "measured", "stage_t": "measured"},
    "class_label": {
        "title": "without attribute captions (class label)",
        "configs": ["vgmedgen_ablation_class_label.json"],
        "captions": "class",
        "stage_t": "class",
    },
    "naive_concat": {
        "title": "naive concatenation",
        "configs": ["vgmedgen_ablation_naive_concat.json"],
        "captions": "measured",
        "stage_t": "measured",
    },
    "no_disentanglement": {
        "title": "without disentanglement",
        "configs": ["vgmedgen_ablation_no_disentanglement.json"],
        "captions": "measured",
        "stage_t": None,
    },
    "no_intensity": {
        "title": "without intensity loss",
        "configs": ["vgmedgen_ablation_no_intensity.json"],
        "captions": "measured",
        "stage_t": "measured",
    },
}
"""The generator of each Table-1 row: its stage-G override, which captions it learns from and which stage T it reads
(stage V is always the seed's main one)."""

CLASSIFIER_ARMS: dict[str, str] = {
    "real": "real only",
    "oversampling": "real + class-balanced oversampling",
    "full": "real + VG-MedGen",
    "class_label": "real + VG-MedGen without attribute captions",
    "naive_concat": "real + VG-MedGen with naive concatenation",
    "no_disentanglement": "real + VG-MedGen without disentanglement",
    "no_intensity": "real + VG-MedGen without intensity loss",
    "synthetic_only": "VG-MedGen synthetic only",
}

PRESETS: dict[str, dict[str, object]] = {
    # few cases and epochs, 2 seeds: about an hour on 2 CPU cores shared with other jobs (docs/vgmedgen.md section 10)
    "quick": {
        "train_cases": 30,
        "test_cases": 24,
        "epochs_v": 10,
        "epochs_t": 10,
        "epochs_g": 4,
        "inference_steps": 10,
        "control_pairs": 6,
        "extractor_epochs": 15,
        "classifier_epochs": 3,
        "samples_per_epoch": 64,
        "seeds": [0, 1],
        "generators": list(GENERATORS),
    },
    # 3 seeds, the demo's training lengths: not run; extrapolated from the quick run, about 3 h on 2 quiet CPU cores
    "default": {
        "train_cases": 60,
        "test_cases": 45,
        "epochs_v": 10,
        "epochs_t": 20,
        "epochs_g": 8,
        "inference_steps": 20,
        "control_pairs": 12,
        "extractor_epochs": 30,
        "classifier_epochs": 20,
        "samples_per_epoch": 96,
        "seeds": [0, 1, 2],
        "generators": list(GENERATORS),
    },
}
COMMON = {"data_seed": 1, "difficulty": 0.3, "batch_size": 8, "slices_per_case": 4, "learning_rate": 0.001}
SECTION_START = "<!-- vgmedgen-evidence: start (written by python -m bundle.experiments.vgmedgen_evidence) -->"
SECTION_END = "<!-- vgmedgen-evidence: end -->"


def settings_for(preset: str = "default", **overrides) -> dict[str, object]:
    settings = preset_settings(PRESETS, COMMON, preset, overrides)
    bad = sorted(set(settings["generators"]) - set(GENERATORS))
    if bad or "full" not in settings["generators"]:
        raise ExperimentError(f"generators must include 'full' and be among {list(GENERATORS)}, got {bad or '[]'}")
    return settings


def classifier_arms(generators: Sequence[str]) -> list[str]:
    """The Table-2 arms for the generators run: real, oversampling, each generator's, synthetic only."""
    return ["real", "oversampling", *[g for g in GENERATORS if g in generators], "synthetic_only"]


# ------------------------------------------------------------------------------------------------------- data
def slice_settings(settings: Mapping) -> dict[str, object]:
    common = common_settings(BUNDLE_ROOT)
    return {
        "spatial_size": common["spatial_size"],
        "pixdim_mm": common["pixdim_mm"],
        "window_margin_mm": 4.0,
        "slices_per_case": int(settings["slices_per_case"]),
        "sigma_mm": common["soft_mask_sigma_mm"],
        "canonical_axcodes": common["canonical_axcodes"],
        "box_size_mm": common["box_size_mm"],
    }


def caption_data(datalist: Path, folder: Path) -> dict:
    """Measured and class-label captions of both lists; the measured ones' fidelity against the ground truth."""
    from bundle.preparation.vgmedgen_captions import caption_datalist

    measured = caption_datalist(datalist, folder / "datalist_measured.json", "measured")
    caption_datalist(datalist, folder / "datalist_class.json", "class")
    fidelity = {k: v for k, v in measured["fidelity"].items() if k != "size_errors_mm"}
    return {"fidelity": fidelity, "failures": {s: v.get("failures", []) for s, v in measured["splits"].items()}}


def real_crops(datalist: Path, path: Path, settings: Mapping) -> dict:
    """The working-window crops of both lists (``image``, ``labels``, per-crop attribute targets, class) in one
    safetensors file."""
    from safetensors.torch import save_file

    from bundle.data.datalist import load_datalist
    from bundle.transforms.vgmedgen_crops import vgmedgen_crop_transform

    transform = vgmedgen_crop_transform(**slice_settings(settings))
    tensors, counts = {}, {}
    for split in ("training", "test"):
        images, labels, targets, classes, sources = [], [], [], [], []
        for index, entry in enumerate(load_datalist(datalist, split)):
            for item in transform(entry):
                sources.append(index)
                images.append(torch.as_tensor(item["image"]).as_subclass(torch.Tensor).float())
                labels.append(torch.as_tensor(item["anatomy_labels"]).as_subclass(torch.Tensor).float())
                values = measures.attribute_targets(entry.get("attributes"))
                targets.append([values[a] for a in (*measures.ANATOMY_ATTRIBUTES, *measures.STYLE_ATTRIBUTES)])
                classes.append(int(entry["class_index"]))
        tensors[f"{split}_image"] = torch.stack(images).contiguous()
        tensors[f"{split}_labels"] = torch.stack(labels).contiguous()
        tensors[f"{split}_targets"] = torch.tensor(targets, dtype=torch.float32)
        tensors[f"{split}_class"] = torch.tensor(classes)
        tensors[f"{split}_entry"] = torch.tensor(sources)
        counts[split] = len(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return {"crops": counts}


CROP_KEYS = {
    f"{split}_{key}" for split in ("training", "test") for key in ("image", "labels", "targets", "class", "entry")
}


def load_crops(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


class DomainExtractor(torch.nn.Module):
    """A small CNN trained to classify the real training crops; ``features`` is its 32-d penultimate layer."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution

        self.body = torch.nn.Sequential(
            Convolution(2, 1, 16, strides=2, norm="batch"),
            Convolution(2, 16, 32, strides=2, norm="batch"),
            Convolution(2, 32, 32, strides=2, norm="batch"),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
        )
        self.head = torch.nn.Linear(32, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images))

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        self.eval()
        return self.body(images)


def train_domain_extractor(crops: Mapping[str, torch.Tensor], path: Path, epochs: int) -> dict:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = DomainExtractor()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, classes = crops["training_image"], crops["training_class"]
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(images)).split(16):
            loss = torch.nn.functional.cross_entropy(model(images[batch]), classes[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(crops["test_image"]).argmax(1) == crops["test_class"]).float().mean())
    save_file(model.state_dict(), str(path))
    return {"test_crop_accuracy": accuracy, "epochs": epochs}


def load_domain_extractor(path: Path) -> DomainExtractor:
    from safetensors.torch import load_file

    model = DomainExtractor()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


# ------------------------------------------------------------------------------------------------- training
def train_stage(configs: Sequence[str], overrides: Mapping[str, object]) -> dict:
    run_config_workflow(list(configs), {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()})
    return {"configs": list(configs), "overrides": {k: str(v) for k, v in overrides.items()}}


def stage_folders(work: Path, seed: int) -> dict[str, Path]:
    root = work / "models" / f"seed_{seed}"
    folders = {"v": root / "visual", "t_measured": root / "text", "t_class": root / "text_class"}
    folders.update({f"g_{name}": root / f"generator_{name}" for name in GENERATORS})
    return folders


def train_seed(steps: Steps, work: Path, seed: int, settings: Mapping) -> None:
    """Stage V and the stage-T models the chosen generators need, for one seed."""
    folders, runs = stage_folders(work, seed), work / "runs" / f"seed_{seed}"
    captions = {"measured": work / "data" / "datalist_measured.json", "class": work / "data" / "datalist_class.json"}
    common = {"seed": seed, "batch_size": int(settings["batch_size"])}
    steps.run(
        f"stage_v_seed{seed}",
        lambda: train_stage(
            ["vgmedgen_train_visual.json"],
            {
                **common,
                "datalist": captions["measured"],
                "models_dir": folders["v"],
                "output_dir": runs / "visual",
                "max_epochs": int(settings["epochs_v"]),
            },
        ),
    )
    needed_t = {GENERATORS[g]["stage_t"] for g in settings["generators"]} - {None}
    for kind in sorted(needed_t):
        steps.run(
            f"stage_t_{kind}_seed{seed}",
            lambda k=kind: train_stage(
                ["vgmedgen_train_text.json"],
                {
                    **common,
                    "datalist": captions[k],
                    "models_dir": folders[f"t_{k}"],
                    "stage_v_dir": folders["v"],
                    "output_dir": runs / f"text_{k}",
                    "max_epochs": int(settings["epochs_t"]),
                },
            ),
        )


def train_generator(steps: Steps, work: Path, seed: int, name: str, settings: Mapping) -> None:
    """Stage G of one generator (its override on ``configs/vgmedgen_train.json``), reading the seed's stage T."""
    folders, spec = stage_folders(work, seed), GENERATORS[name]
    overrides = {
        "seed": seed,
        "batch_size": int(settings["batch_size"]),
        "datalist": work / "data" / f"datalist_{spec['captions']}.json",
        "models_dir": folders[f"g_{name}"],
        "output_dir": work / "runs" / f"seed_{seed}" / f"generator_{name}",
        "max_epochs": int(settings["epochs_g"]),
    }
    if spec["stage_t"] is not None:
        overrides["stage_t_dir"] = folders[f"t_{spec['stage_t']}"]
    configs = ["vgmedgen_train.json", *spec["configs"]]
    steps.run(f"stage_g_{name}_seed{seed}", lambda: train_stage(configs, overrides))


# ---------------------------------------------------------------------------------------- disentanglement
def evaluate_disentanglement(work: Path, seed: int, crops: Mapping[str, torch.Tensor]) -> dict:
    """Stage V's head Dice on the test crops, the style swap, and probes of the visual and text vectors."""
    from bundle.data.datalist import load_datalist
    from bundle.metrics.linear_probe import mean_r2, probe_table
    from bundle.networks.medical_clip import MedicalClipEncoder
    from bundle.networks.vgmedgen_text import load_text_disentangler
    from bundle.networks.vgmedgen_visual import VisualDisentangler

    folders = stage_folders(work, seed)
    visual = VisualDisentangler.load(folders["v"] / "vgmedgen_visual.safetensors").eval()
    images, labels = crops["test_image"], crops["test_labels"][:, 0]
    with torch.no_grad():
        anatomy = visual.anatomy(images)
        predicted = visual.segmentation(anatomy).argmax(1)
        mu, _ = visual.style.encode(images, anatomy)
        own = visual.style.decode(anatomy, mu)
        donors = torch.roll(torch.arange(len(images)), shifts=len(images) // 2)
        swapped = visual.style.decode(anatomy, mu[donors])
        swapped_seg = visual.segmentation(visual.anatomy(swapped)).argmax(1)
    vertebra_dice = [slice_dice(p >= 1, t >= 1) for p, t in zip(predicted, labels, strict=True) if bool((t >= 1).any())]
    lesion_dice = [slice_dice(p == 2, t == 2) for p, t in zip(predicted, labels, strict=True) if bool((t == 2).any())]
    keep = [slice_dice(a >= 1, b >= 1) for a, b in zip(swapped_seg, predicted, strict=True)]

    def vertebra_mean(image: torch.Tensor, region: torch.Tensor) -> float:
        return float(image[0][region >= 1].mean()) if bool((region >= 1).any()) else float(image.mean())

    own_means = [vertebra_mean(o, r) for o, r in zip(own, labels, strict=True)]
    swap_means = [vertebra_mean(s, r) for s, r in zip(swapped, labels, strict=True)]
    donor_means = [own_means[int(d)] for d in donors]

    names = (*measures.ANATOMY_ATTRIBUTES, *measures.STYLE_ATTRIBUTES)
    targets = {a: (crops["training_targets"][:, i], crops["test_targets"][:, i]) for i, a in enumerate(names)}
    train_anatomy, train_style = visual.features(crops["training_image"])
    test_anatomy, test_style = visual.features(images)
    vectors = {"visual anatomy": (train_anatomy, test_anatomy), "visual style": (train_style, test_style)}
    if (folders["t_measured"] / "vgmedgen_text.safetensors").is_file():
        encoder = MedicalClipEncoder.tiny(seed=seed).eval()
        text = load_text_disentangler(folders["t_measured"], encoder.embed_dim).eval()
        captions = work / "data" / "datalist_measured.json"
        per_split = {}
        with torch.no_grad():
            for split in ("training", "test"):
                entries = load_datalist(captions, split)
                t_a, t_s, _ = text(encoder.encode_text([e["text"] for e in entries]))
                entry = crops[f"{split}_entry"]  # one vector per crop: its entry's caption
                per_split[split] = (t_a[entry], t_s[entry])
        vectors["text anatomy"] = (per_split["training"][0], per_split["test"][0])
        vectors["text style"] = (per_split["training"][1], per_split["test"][1])
    table = probe_table(vectors, targets)
    return {
        "vertebra_dice": mean_std(vertebra_dice)[0],
        "lesion_dice": mean_std(lesion_dice)[0],
        "swap_anatomy_dice": mean_std(keep)[0],
        "swap_toward_donor": measures.toward_donor(own_means, swap_means, donor_means),
        "probes": table,
        "probe_means": {
            kind: {
                "anatomy": mean_r2(table[kind], measures.ANATOMY_ATTRIBUTES),
                "style": mean_r2(table[kind], measures.STYLE_ATTRIBUTES),
            }
            for kind in table
        },
    }


# ------------------------------------------------------------------------------------------------ generation
class KeepCrops:
    """Wraps the crop writer: every written crop is also kept in memory (for FID, KID and HFD)."""

    def __init__(self, writer) -> None:
        self.writer, self.images = writer, []

    def __call__(self, image, segmentation, pixel_mm, details):
        outputs = self.writer(image, segmentation, pixel_mm, details)
        self.images.append(image.detach().float().cpu())
        return outputs


def generation_requests(datalist: Path) -> list[dict]:
    """The training entries, repeated so that every class has about as many requests as the largest class (each
    copy its own case id, so its own seed)."""
    from bundle.data.datalist import load_datalist

    entries = load_datalist(datalist, "training")
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry["label"]] = counts.get(entry["label"], 0) + 1
    target = max(counts.values())
    requests = []
    for entry in entries:
        for copy in range(math.ceil(target / counts[entry["label"]])):
            requests.append({**entry, "case_id": f"{entry['case_id']}_c{copy}"})
    return requests


def generate_and_measure(work: Path, seed: int, name: str, settings: Mapping, crops: Mapping) -> dict:
    """Generated crops of one generator (written with their datalist), their FID / KID / HFD against the real test
    crops, and text control."""
    from monai.bundle import ConfigParser

    from bundle.metrics.distribution import (
        describe_clip,
        frechet_distance,
        kernel_inception_distance,
    )
    from bundle.metrics.image_quality import high_frequency_distance
    from bundle.networks.medical_clip import MedicalClipEncoder
    from bundle.utils.bundle_files import CONFIGS_DIR

    folders, spec = stage_folders(work, seed), GENERATORS[name]
    source = work / "data" / f"datalist_{spec['captions']}.json"
    content = json.loads(source.read_text())
    content["generation_requests"] = generation_requests(source)
    requests_list = work / "data" / f"requests_{spec['captions']}.json"
    write_json_atomically(requests_list, content)
    output = work / "generated" / f"seed_{seed}" / name
    parser = ConfigParser()
    parser.read_config(str(CONFIGS_DIR / "vgmedgen_inference.json"))
    parser.update(
        {
            "bundle_root": str(BUNDLE_ROOT),
            "datalist": str(requests_list),
            "requests_split": "generation_requests",
            "models_dir": str(folders[f"g_{name}"]),
            "stage_t_dir": str(folders[f"t_{spec['stage_t']}"] if spec["stage_t"] else folders[f"g_{name}"]),
            "stage_v_dir": str(folders["v"]),
            "output_dir": str(output),
            "seed": seed,
            "num_inference_steps": int(settings["inference_steps"]),
            "device": "$torch.device('cpu')",
        }
    )
    parser.parse()
    job = parser.get_parsed_content("job")
    keep = KeepCrops(job.writer)
    job.writer = keep
    output.mkdir(parents=True, exist_ok=True)
    report = job.run()
    if len(keep.images) < 2:
        raise RuntimeError(f"{name} seed {seed}: only {len(keep.images)} crops written ({output / 'report.json'})")
    generated = torch.stack(keep.images)
    real = crops["test_image"]
    domain = load_domain_extractor(work / "domain_extractor.safetensors")
    clip = MedicalClipEncoder.tiny(seed=0).eval()
    metrics: dict[str, object] = {"written": len(keep.images), "failed": len(report["failed"])}
    with torch.no_grad():
        for key, extract in (("domain", domain.features), ("clip", clip.encode_image)):
            real_features, generated_features = extract(real), extract(generated)
            metrics[f"fid_{key}"] = frechet_distance(real_features, generated_features)
            metrics[f"kid_{key}"] = kernel_inception_distance(real_features, generated_features, subsets=50)[0]
    metrics["hfd"] = high_frequency_distance(real, generated)
    metrics["named_extractor"] = describe_clip(clip)
    metrics.update(text_control(job, work, int(settings["control_pairs"]), seed))
    return metrics


def text_control(job, work: Path, count: int, seed: int) -> dict:
    """Per phrase kind, the share of prompt pairs whose generated crops (one seed per pair, the same for both
    members) move the requested way: brighter vertebra for hyper- vs hypointense, larger lesion-like area for the
    larger size (:mod:`bundle.experiments.vgmedgen_measures`)."""
    from bundle.data.datalist import load_datalist

    captions = [
        e["text"] for e in load_datalist(work / "data" / "datalist_measured.json", "test") if e["label"] != "normal"
    ]
    pairs = measures.control_pairs(captions, count)
    measure = {"signal": measures.signal_measure, "size": measures.lesion_area_measure}
    result = {}
    for kind, kind_pairs in pairs.items():
        if not kind_pairs:
            result[f"control_{kind}"] = float("nan")
            continue
        seeds = [10_000 + seed * 1000 + i for i in range(len(kind_pairs))]
        values = {}
        for side in (0, 1):
            images, segmentation = job.generate([p[side] for p in kind_pairs], seeds)
            values[side] = [measure[kind](i, s) for i, s in zip(images, segmentation, strict=True)]
        result[f"control_{kind}"] = measures.moved_fraction(values[0], values[1])
        result[f"control_{kind}_pairs"] = len(kind_pairs)
    return result


# ------------------------------------------------------------------------------------------------ classifier
def arm_datalist(work: Path, arm: str, seed: int) -> tuple[Path, str]:
    """The arm's datalist (written once per arm and seed) and its sampling."""
    from bundle.data.datalist import load_datalist

    base = work / "data" / "datalist.json"
    path = work / "classify_lists" / f"{arm}_seed{seed}.json"
    if arm in ("real", "oversampling"):
        return base, "balanced" if arm == "oversampling" else "natural"
    generator = "full" if arm == "synthetic_only" else arm
    listed = work / "generated" / f"seed_{seed}" / generator / "datalist.json"
    generated = [e for e in load_datalist(listed, "training") if e.get("synthetic")]
    content = json.loads(base.read_text())
    content["training"] = measures.arm_training(arm, load_datalist(base, "training"), generated)
    content["test"] = load_datalist(base, "test")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, content)
    return path, "natural"


def classify(work: Path, arm: str, seed: int, settings: Mapping) -> dict:
    from bundle.data.datalist import load_datalist

    datalist, sampling = arm_datalist(work, arm, seed)
    output = work / "classify" / arm / f"seed_{seed}"
    overrides = {
        "datalist": str(datalist),
        "output_dir": str(output),
        "cache_dir": str(work / "cache"),
        "seed": seed,
        "sampling": sampling,
        "max_epochs": int(settings["classifier_epochs"]),
        "samples_per_epoch": int(settings["samples_per_epoch"]),
        "batch_size": int(settings["batch_size"]),
        "learning_rate": float(settings["learning_rate"]),
        "slices_per_case": int(settings["slices_per_case"]),
    }
    run_config_workflow(["classify.json"], overrides)
    return {"training_counts": measures.class_counts(load_datalist(datalist, "training"))}


# -------------------------------------------------------------------------------------------------- the run
def run(work_dir: str | Path, settings: Mapping, doc: str | Path | None, command: str) -> dict:
    from bundle.experiments.downstream import make_data

    start = time.monotonic()
    work = Path(work_dir).absolute()
    claim_work_dir(work, {"settings": dict(settings)})
    steps = Steps(work)
    data = {
        "train_cases": settings["train_cases"],
        "test_cases": settings["test_cases"],
        "data_seed": settings["data_seed"],
        "difficulty": settings["difficulty"],
    }
    steps.run("data", lambda: {"datalist": str(make_data(work / "data", data))})
    datalist = work / "data" / "datalist.json"
    steps.run("captions", lambda: caption_data(datalist, work / "data"))
    crops_path = work / "real_crops.safetensors"
    if crops_path.is_file() and CROP_KEYS - set(load_crops(crops_path)):
        steps.forget("real_crops")  # written by an earlier version without every key: made again
    steps.run("real_crops", lambda: real_crops(work / "data" / "datalist_measured.json", crops_path, settings))
    crops = load_crops(crops_path)
    steps.run(
        "domain_extractor",
        lambda: train_domain_extractor(crops, work / "domain_extractor.safetensors", int(settings["extractor_epochs"])),
    )
    failures: dict[str, str] = {}
    # one seed end to end before the next, the section rewritten after each: a stopped run reports whole seeds
    for seed in [int(s) for s in settings["seeds"]]:
        failures.update(run_seed(steps, work, seed, settings, crops))
        if doc is not None:
            write_section(Path(doc), work, settings, command, time.monotonic() - start)
    elapsed = time.monotonic() - start
    if failures:
        raise ExperimentError(f"{len(failures)} step(s) failed: {failures}; run the same command again to retry them")
    return {"seconds": elapsed}


def run_seed(steps: Steps, work: Path, seed: int, settings: Mapping, crops: Mapping) -> dict[str, str]:
    """One seed: stages V and T, disentanglement, the real-data classifier arms, then per generator stage G, its
    generation and its classifier arm(s), so that a stopped run holds whole generators. Returns the failures."""
    try:
        train_seed(steps, work, seed, settings)
        steps.run(f"disentanglement_seed{seed}", lambda: evaluate_disentanglement(work, seed, crops))
    except Exception as error:  # one seed's failure must not lose the others
        logger.error("seed %s failed: %s", seed, error)
        return {f"seed{seed}": f"{type(error).__name__}: {error}"}

    def classify_arms(arms: Sequence[str]) -> dict[str, str]:
        return seeded_runs(
            steps,
            arms,
            [seed],
            run=lambda a, s: classify(work, a, s, settings),
            result=lambda a, s: {},
            prefix="classify",
        )[1]

    failures = classify_arms(["real", "oversampling"])
    for name in settings["generators"]:
        try:
            train_generator(steps, work, seed, name, settings)
            steps.run(
                f"generate_{name}_seed{seed}", lambda n=name: generate_and_measure(work, seed, n, settings, crops)
            )
        except Exception as error:  # one generator's failure must not lose the others
            logger.error("generator %s seed %s failed: %s", name, seed, error)
            failures[f"generate_{name}_seed{seed}"] = f"{type(error).__name__}: {error}"
            continue
        failures.update(classify_arms([name, "synthetic_only"] if name == "full" else [name]))
    return failures


# --------------------------------------------------------------------------------------------------- report
def collect(work: Path, settings: Mapping) -> dict:
    """Every finished result under ``work``: ``disentanglement[seed]``, ``generation[generator][seed]``,
    ``classification[arm][seed]`` (the classifier's ``metrics.json``)."""
    steps = Steps(work)
    seeds = [int(s) for s in settings["seeds"]]
    out: dict[str, object] = {
        "captions": (steps.done("captions") or {}).get("details", {}),
        "extractor": (steps.done("domain_extractor") or {}).get("details", {}),
        "disentanglement": {
            s: steps.done(f"disentanglement_seed{s}")["details"]
            for s in seeds
            if steps.done(f"disentanglement_seed{s}")
        },
        "generation": {},
        "classification": {},
    }
    for name in settings["generators"]:
        runs = {
            s: steps.done(f"generate_{name}_seed{s}")["details"]
            for s in seeds
            if steps.done(f"generate_{name}_seed{s}")
        }
        if runs:
            out["generation"][name] = runs
    for arm in classifier_arms(settings["generators"]):
        runs = {}
        for s in seeds:
            metrics = work / "classify" / arm / f"seed_{s}" / "metrics.json"
            if steps.done(f"classify_{arm}_seed{s}") and metrics.is_file():
                runs[s] = {**json.loads(metrics.read_text()), **steps.done(f"classify_{arm}_seed{s}")["details"]}
        if runs:
            out["classification"][arm] = runs
    out["seconds"] = steps.seconds()
    return out


def _ms(runs: Mapping[int, Mapping], key: str, sub: str | None = None) -> tuple[float, float]:
    values = [(r[key] if sub is None else r[key][sub]) for r in runs.values()]
    return mean_std([float(v) if v is not None else None for v in values])


def _fraction(item: Mapping | None) -> str:
    if not item or not item.get("of"):
        return "n/a"
    return f"{item['agree']}/{item['of']} ({100 * item['fraction']:.0f} %)"


def section_lines(results: Mapping, settings: Mapping, command: str, elapsed: float) -> list[str]:
    seeds = sorted(results["disentanglement"])
    lines = [
        SECTION_START,
        "## 10. Evidence: results (written by the command of section 9)",
        "",
        "*Written by the command below; do not edit by hand: rerun it.*",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Preset **{settings['preset']}**; seeds {', '.join(map(str, settings['seeds']))} "
        f"({len(seeds)} finished stage V/T); time: {sum(results['seconds'].values()) / 60:.1f} min, the sum of "
        f"the steps' times as each finished (this invocation's wall time {elapsed / 60:.1f} min; steps finished by "
        f"an earlier invocation of the same run are reused); {platform.platform()}, "
        f"torch threads {torch.get_num_threads()}. Data: {settings['train_cases']} imbalanced training cases "
        f"and {settings['test_cases']} class-balanced test cases of the phantom (difficulty {settings['difficulty']}, "
        f"seed {settings['data_seed']}); stage epochs V {settings['epochs_v']}, T {settings['epochs_t']}, "
        f"G {settings['epochs_g']}; {settings['inference_steps']} DPM-Solver++ steps. Mean ± sample standard "
        "deviation over seeds. A verdict holds when the mean is on the claimed side; *clearly* when the difference "
        "exceeds the larger of the two standard deviations, else *within the seed spread*; printed whatever the "
        "outcome.",
        "",
        "### Caption fidelity (measured captions against the phantom's ground truth, both lists)",
        "",
        "| attribute | agreement |",
        "| --- | --- |",
    ]
    fidelity = results["captions"].get("fidelity", {})
    for key in (
        "lesion",
        "signal",
        "position",
        "margin",
        "margin_majority",
        "size",
        "height_loss",
        "striations",
        "striations_majority",
    ):
        lines.append(f"| {key.replace('_', ' ')} | {_fraction(fidelity.get(key))} |")
    verdict_lines: list[str] = []
    for part in (_disentanglement_lines, _generation_lines, _classification_lines):
        more, more_verdicts = part(results)
        lines += more
        verdict_lines += more_verdicts
    lines += [
        "",
        "### Verdicts",
        "",
        *verdict_lines,
        "",
        "### Step times (minutes)",
        "",
        "| step | minutes |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in step_groups(results["seconds"]).items()]
    lines += ["", f"*Written {datetime.now(timezone.utc).isoformat(timespec='seconds')}.*", SECTION_END]
    return lines


def step_groups(seconds: Mapping[str, float]) -> dict[str, float]:
    """Step seconds summed over seeds: ``stage_g_full_seed0`` and ``stage_g_full_seed1`` count as ``stage_g_full``."""
    groups: dict[str, float] = {}
    for name, value in seconds.items():
        key = re.sub(r"_seed\d+$", "", name)
        groups[key] = groups.get(key, 0.0) + float(value)
    return groups


def _disentanglement_lines(results: Mapping) -> tuple[list[str], list[str]]:
    dis = results["disentanglement"]
    if not dis:
        return [], []
    verdict_lines: list[str] = []
    lines = [
        "",
        "### Disentanglement (stage V on the real test crops; probes: held-out R² of a ridge probe)",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| segmentation head, vertebra Dice | {cell(*_ms(dis, 'vertebra_dice'))} |",
        f"| segmentation head, lesion Dice | {cell(*_ms(dis, 'lesion_dice'))} |",
        f"| style swap: vertebra Dice, swapped vs original | {cell(*_ms(dis, 'swap_anatomy_dice'))} |",
        f"| style swap: share moved toward the donor's intensity | {cell(*_ms(dis, 'swap_toward_donor'))} |",
        "",
        "| vector | "
        + " | ".join(measures.ANATOMY_ATTRIBUTES + measures.STYLE_ATTRIBUTES)
        + " | mean R², anatomy attributes | mean R², style attributes |",
        "| --- |" + " ---: |" * (len(measures.ANATOMY_ATTRIBUTES) + len(measures.STYLE_ATTRIBUTES) + 2),
    ]
    kinds = list(next(iter(dis.values()))["probes"])
    for kind in kinds:
        runs = {s: r for s, r in dis.items() if kind in r["probes"]}
        row = [
            cell(*mean_std([r["probes"][kind][a] for r in runs.values()]))
            for a in (*measures.ANATOMY_ATTRIBUTES, *measures.STYLE_ATTRIBUTES)
        ]
        means = {side: mean_std([r["probe_means"][kind][side] for r in runs.values()]) for side in ("anatomy", "style")}
        lines.append(f"| {kind} | " + " | ".join(row) + f" | {cell(*means['anatomy'])} | {cell(*means['style'])} |")
        own, other = ("anatomy", "style") if "anatomy" in kind else ("style", "anatomy")
        verdict_lines.append(
            measures.verdict(
                f"the {kind} vector predicts {own} attributes better than {other} attributes (mean R²)",
                means[own],
                means[other],
                seeds=len(runs),
            )[1]
        )
    verdict_lines.append(
        measures.threshold_verdict(
            "style swap keeps anatomy (vertebra Dice >= 0.8)", _ms(dis, "swap_anatomy_dice"), 0.8
        )[1]
    )
    verdict_lines.append(
        measures.threshold_verdict(
            "style swap moves intensity toward the donor (share > 0.5)", _ms(dis, "swap_toward_donor"), 0.5 + 1e-9
        )[1]
    )
    return lines, verdict_lines


def _generation_lines(results: Mapping) -> tuple[list[str], list[str]]:
    gen = results["generation"]
    if not gen:
        return [], []
    verdict_lines: list[str] = []
    lines = [
        "",
        "### Text control and Table-1 analogue (generated crops vs the real test crops)",
        "",
        "Generated from the training captions (each class filled to about the normal count). FID / KID on the "
        f"*domain* extractor (a small CNN trained on the real training crops, test-crop accuracy "
        f"{results['extractor'].get('test_crop_accuracy', float('nan')):.2f}) and on the *named* one ("
        f"{next(iter(next(iter(gen.values())).values())).get('named_extractor', '?')}); HFD = high-frequency "
        "distance (`bundle.metrics.image_quality.high_frequency_distance`). Lower is better for all six. Text "
        "control: the share of prompt pairs (one phrase changed, same seed) whose crops move the requested way "
        "(signal: brighter vertebra for hyper- than hypointense; size: larger lesion-like area for 24 than 6 mm).",
        "",
        "| generator | seeds | crops per seed | FID domain | KID domain | FID named | KID named | HFD | "
        "text control: signal | "
        "text control: size |",
        "| --- |" + " ---: |" * 9,
    ]
    for name, runs in gen.items():
        lines.append(
            f"| {GENERATORS[name]['title']} | {len(runs)} | {sum(r['written'] for r in runs.values()) // len(runs)} | "
            + " | ".join(
                cell(*_ms(runs, k))
                for k in (
                    "fid_domain",
                    "kid_domain",
                    "fid_clip",
                    "kid_clip",
                    "hfd",
                    "control_signal",
                    "control_size",
                )
            )
            + " |"
        )
    full = gen.get("full", {})
    if full:
        for kind in ("signal", "size"):
            verdict_lines.append(
                measures.threshold_verdict(
                    f"text control, {kind} phrase, full model (>= 80 % of pairs)", _ms(full, f"control_{kind}"), 0.8
                )[1]
            )
        for name in gen:
            if name == "full":
                continue
            verdict_lines.append(
                measures.verdict(
                    f"full model's domain FID below {GENERATORS[name]['title']}",
                    _ms(full, "fid_domain"),
                    _ms(gen[name], "fid_domain"),
                    higher=False,
                    seeds=min(len(full), len(gen[name])),
                )[1]
            )
    return lines, verdict_lines


def _classification_lines(results: Mapping) -> tuple[list[str], list[str]]:
    cls = results["classification"]
    if not cls:
        return [], []
    verdict_lines: list[str] = []
    lines = [
        "",
        "### Table-2 analogue (classifier `configs/classify.json` on the real test cases)",
        "",
        "Macro F1, balanced accuracy (BACC = macro recall) and macro one-vs-rest AUC, case level; how many classes "
        "the classifier predicts at all on the test cases (1: one class for every case). "
        "**Real + MedSoft: not run** (MedSoft inserts lesions into whole normal volumes: its two training stages "
        "and a volume synthesis per case are not part of this run; `docs/downstream.md` has its own arms).",
        "",
        "| arm | seeds | training cases (real + synthetic) | F1 | BACC | AUC | classes predicted, per seed |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for arm, runs in cls.items():
        counts = next(iter(runs.values())).get("training_counts", {})
        text = ", ".join(
            f"{k} {v['real']}" + (f" + {v['synthetic']}" if v["synthetic"] else "") for k, v in counts.items()
        )
        lines.append(
            f"| {CLASSIFIER_ARMS[arm]} | {len(runs)} | {text} | "
            + " | ".join(cell(*_ms(runs, k)) for k in ("f1", "recall", "auc"))
            + f" | {', '.join(str(measures.predicted_classes(r.get('confusion_matrix', []))) for r in runs.values())} |"
        )
    if "full" in cls:
        for other in cls:
            if other == "full":
                continue
            verdict_lines.append(
                measures.verdict(
                    f"macro F1 of real + VG-MedGen above {CLASSIFIER_ARMS[other]}",
                    _ms(cls["full"], "f1"),
                    _ms(cls[other], "f1"),
                    seeds=min(len(cls["full"]), len(cls[other])),
                )[1]
            )
    return lines, verdict_lines


def write_section(doc: Path, work: Path, settings: Mapping, command: str, elapsed: float) -> Path:
    """Replace the evidence section of ``doc`` (between :data:`SECTION_START` and :data:`SECTION_END`; appended
    when absent) with the tables of what finished under ``work``."""
    results = collect(work, settings)
    section = "\n".join(section_lines(results, settings, command, elapsed))
    text = doc.read_text() if doc.is_file() else ""
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        text = head + section + rest.split(SECTION_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--work_dir", default="runs/vgmedgen_evidence")
    parser.add_argument("--doc", default=str(BUNDLE_ROOT / "docs" / "vgmedgen.md"))
    parser.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1,2")
    parser.add_argument("--generators", default=None, help=f"comma-separated among {list(GENERATORS)}")
    parser.add_argument("--report_only", action="store_true", help="rewrite the section from finished steps")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    overrides = {}
    if arguments.seeds:
        overrides["seeds"] = [int(s) for s in arguments.seeds.split(",")]
    if arguments.generators:
        overrides["generators"] = arguments.generators.split(",")
    settings = settings_for(arguments.preset, **overrides)
    command = "python -m bundle.experiments.vgmedgen_evidence " + " ".join(argv if argv is not None else sys.argv[1:])
    if arguments.report_only:
        write_section(Path(arguments.doc), Path(arguments.work_dir).absolute(), settings, command, float("nan"))
        return 0
    run(arguments.work_dir, settings, arguments.doc, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
