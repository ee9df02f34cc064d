"""Write ``models/model.pt`` (the plain tensor state dict ``monai.bundle.load`` reads) for a models folder that stage 2
wrote before the file existed; stage 2 writes it itself now.

    python scripts/export.py --models_dir models
    python scripts/export.py --models_dir models \
        --config_files "['configs/inference.json','configs/sd15_inference.json']"

The model is built by the inference config's ``network_def`` (with ``overrides`` by MONAI id); ``model.pt`` holds
the whole model for the ``tiny`` profile, only the trained parameters (MSC, W'_k / W'_v, LoRA) when the base UNet is
a pretrained one (``base_unet_dir`` set, the ``sd15`` profile). The file is replaced atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import fire
import torch
from monai.bundle import ConfigParser

from bundle.handlers.export import replace_outputs
from bundle.networks.medsoft_diffusion import MODEL_FILE, model_state_dict
from bundle.utils.bundle_files import BUNDLE_ROOT


def main(
    models_dir: str = "models", config_files: Sequence[str] = ("configs/inference.json",), **overrides: object
) -> None:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE_ROOT / name) for name in config_files])
    parser.update({"bundle_root": str(BUNDLE_ROOT), "models_dir": str(Path(models_dir).absolute()), **overrides})
    model = parser.get_parsed_content("network_def")
    state = model_state_dict(model, whole=parser.get_parsed_content("base_unet_dir") is None)
    replace_outputs(Path(models_dir), lambda folder: torch.save(state, folder / MODEL_FILE))
    path = Path(models_dir) / MODEL_FILE
    print(f"{path}: {len(state)} tensors, {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    fire.Fire(main)
