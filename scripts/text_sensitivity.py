"""Does the trained denoiser listen to the text? For each request of a synthesis datalist (normal slices), the
model's one-step estimate of x0 inside the soft mask's core at several noise levels, with the request's text, its
signal word swapped and a no-lesion text (definitions: bundle/experiments/text_sensitivity.py,
docs/text_adherence.md).

    python scripts/text_sensitivity.py --requests demo/data/requests.json --output demo/outputs/text_sensitivity.json
        [--models_dir models] [--stage1_dir DIR] [--timesteps "[900,700,500,300]"] [--max_requests 18]
"""

from __future__ import annotations

from collections import defaultdict

import fire
import torch
from monai.bundle import ConfigParser

from bundle.experiments.text_sensitivity import one_step_bias, summarise, text_variants
from bundle.metrics.text_adherence import requested_signal
from bundle.utils.bundle_files import BUNDLE_ROOT
from bundle.utils.files import write_json_atomically


def main(
    requests: str,
    output: str,
    timesteps: tuple[int, ...] = (900, 700, 500, 300),
    max_requests: int | None = None,
    seed: int = 0,
    config_file: str = "configs/inference.json",
    **overrides,
) -> None:
    """``overrides``: any ID of the inference config, e.g. ``--models_dir DIR --stage1_dir DIR``."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE_ROOT / config_file))
    parser["bundle_root"] = str(BUNDLE_ROOT)
    parser["datalist"] = requests
    for key, value in overrides.items():
        parser[key] = value
    preprocessing = parser.get_parsed_content("preprocessing")
    network = parser.get_parsed_content("network").eval()
    noise_scheduler = parser.get_parsed_content("noise_scheduler")
    cases = parser.get_parsed_content("cases")[:max_requests]
    rows: dict[str, list] = defaultdict(list)
    for number, case in enumerate(cases, 1):
        slices = preprocessing(case)
        slices = slices if isinstance(slices, list) else [slices]
        images = torch.stack([item["image"] for item in slices]).float()
        soft_masks = torch.stack([item["soft_mask"] for item in slices]).float()
        texts = text_variants(case["text"], case.get("level", "L3"))
        rows[requested_signal(case["text"])].append(
            one_step_bias(network, noise_scheduler, images, soft_masks, texts, timesteps, seed)
        )
        print(f"[{number}/{len(cases)}] {case['case_id']}", flush=True)
    report = {
        "requests": requests,
        "timesteps": list(timesteps),
        "by_signal": {signal: {"count": len(group), **summarise(group)} for signal, group in sorted(rows.items())},
    }
    write_json_atomically(output, report)
    for signal, group in report["by_signal"].items():
        print(f"{signal} (n={group['count']}):")
        for name, values in group["bias"].items():
            print(f"  bias with {name:>9} text: " + ", ".join(f"t={t} {v:+.4f}" for t, v in values.items()))
        for name, values in group["text_effect"].items():
            print(f"  effect of {name:>9} text: " + ", ".join(f"t={t} {v:+.4f}" for t, v in values.items()))
    print(f"report: {output}")


if __name__ == "__main__":
    fire.Fire(main)
