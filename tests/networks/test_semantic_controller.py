"""The Medical Semantic Controller: one e_MSC vector, it learns, it is saved and loaded, old files are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from bundle.errors import InputError
from bundle.losses.alignment import alignment_loss
from bundle.networks.semantic_controller import MedicalSemanticController


def test_controller_gives_one_e_msc_vector_from_both_features():
    controller = MedicalSemanticController(embed_dim=16, width=32, layers=1, heads=4)
    e_t, e_v = torch.randn(5, 16), torch.randn(5, 16)
    e_msc = controller(e_t, e_v)
    assert e_msc.shape == (5, 16)  # the paper's e_MSC: what stage 1 aligns is what the UNet attends to
    assert not torch.allclose(controller(e_t, torch.randn(5, 16)), e_msc)  # e_v matters
    assert not torch.allclose(controller(torch.randn(5, 16), e_v), e_msc)  # e_t matters
    with pytest.raises(ValueError, match="must both be"):
        controller(e_t, torch.randn(5, 8))


def test_controller_learns_to_predict_the_original_feature():
    torch.manual_seed(0)
    controller = MedicalSemanticController(embed_dim=8, width=32, layers=1, heads=2)
    e_t, e_v = torch.randn(32, 8), torch.randn(32, 8)
    e_r = torch.tanh(e_t + 0.5 * e_v)
    optimizer = torch.optim.AdamW(controller.parameters(), lr=3e-3)
    start = float(alignment_loss(controller(e_t, e_v), e_r))
    for _ in range(150):
        optimizer.zero_grad()
        loss = alignment_loss(controller(e_t, e_v), e_r)
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.2 * start


def test_controller_save_and_load(tmp_path):
    controller = MedicalSemanticController(embed_dim=16, width=32, layers=1, heads=4)
    controller.save(tmp_path / "msc.safetensors")
    loaded = MedicalSemanticController.load(tmp_path / "msc.safetensors")
    e_t, e_v = torch.randn(2, 16), torch.randn(2, 16)
    assert torch.equal(loaded(e_t, e_v), controller(e_t, e_v))
    with pytest.raises(InputError, match="missing.*train_msc"):
        MedicalSemanticController.load(tmp_path / "absent.safetensors")


def test_a_controller_of_the_version_with_four_mean_aligned_tokens_is_refused(tmp_path):
    settings = {"embed_dim": 16, "num_tokens": 4, "width": 32, "layers": 1, "heads": 4}  # what it stored
    tensors = {
        name: tensor.contiguous()
        for name, tensor in MedicalSemanticController(embed_dim=16, width=32, layers=1, heads=4).state_dict().items()
    }
    save_file(tensors, str(tmp_path / "msc.safetensors"), metadata={"semantic_controller": json.dumps(settings)})
    with pytest.raises(InputError, match="msc.safetensors.*4 e_MSC tokens.*only their mean.*stage 1"):
        MedicalSemanticController.load(tmp_path / "msc.safetensors")


def test_controller_settings_are_its_registered_config_and_a_pretrained_folder_loads(tmp_path):
    controller = MedicalSemanticController(embed_dim=16, width=32, layers=1, heads=4)
    assert (
        controller.settings
        == {"embed_dim": 16, "width": 32, "layers": 1, "heads": 4}
        == {name: value for name, value in controller.config.items() if not name.startswith("_")}
    )
    controller.save_pretrained(tmp_path / "msc")  # diffusers' folder: config.json + safetensors
    assert sorted(p.name for p in (tmp_path / "msc").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    loaded = MedicalSemanticController.load(tmp_path / "msc")
    assert loaded.settings == controller.settings
    e_t, e_v = torch.randn(2, 16), torch.randn(2, 16)
    assert torch.equal(loaded(e_t, e_v), controller(e_t, e_v))
    (tmp_path / "msc" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(InputError, match="not a saved semantic controller"):
        MedicalSemanticController.load(tmp_path / "msc")
