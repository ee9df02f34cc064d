"""VG-MedGen's DiT (a small random PixArt): the learned-sigma split, the prompt's effect, and LoRA via peft: it
starts as the base model, and training it changes only the LoRA and fusion weights."""

from __future__ import annotations

import pytest
import torch

from bundle.networks.vgmedgen_dit import DiTDenoiser, tiny_pixart
from bundle.networks.vgmedgen_generator import tiny_generator

TEXTS = ["Malignant L3 vertebra. Style: markedly hypointense.", "Normal L2 vertebra. Style: homogeneous."]


def small(**kwargs):
    return tiny_generator(spatial_size=16, num_layers=2, **kwargs)


def test_the_noise_is_the_first_half_of_the_learned_sigma_output():
    transformer = tiny_pixart(sample_size=16, num_layers=1)
    denoiser = DiTDenoiser(transformer)
    latents, tokens, t = torch.randn(2, 1, 16, 16), torch.randn(2, 3, 96), torch.tensor([3, 700])
    full = transformer(latents, encoder_hidden_states=tokens, timestep=t, added_cond_kwargs={}).sample
    assert full.shape == (2, 2, 16, 16)
    torch.testing.assert_close(denoiser(latents, t, tokens), full[:, :1])


def test_the_prediction_depends_on_the_prompt_and_the_null_prompt_differs():
    model = small(seed=1).eval()
    latents, t = torch.randn(2, 1, 16, 16), torch.tensor([100, 100])
    conditions = model.conditions(TEXTS)
    swapped = model.conditions(TEXTS[::-1])
    predicted = model(latents, t, conditions)
    assert not torch.allclose(model(latents, t, swapped), predicted)
    assert not torch.allclose(model(latents, t, model.null_conditions(2)), predicted)
    with pytest.raises(ValueError, match="items \\[1\\]"):
        model.conditions(["text", " "])


def test_lora_starts_as_the_base_model_and_training_changes_only_lora_and_fusion_weights():
    base = small(seed=2).eval()
    model = small(seed=2, trainable="lora").eval()
    latents, t = torch.randn(4, 1, 16, 16), torch.tensor([5, 200, 600, 900])
    conditions = model.conditions(TEXTS * 2)
    with torch.no_grad():
        torch.testing.assert_close(model(latents, t, conditions), base(latents, t, conditions))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith("fusion.") for name in trainable)
    assert any(name.startswith("fusion.") for name in trainable)
    assert all(f".{target}." in "".join(trainable) for target in ("to_q", "to_k", "to_v", "to_out.0"))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        loss = (model(latents, t, conditions) - latents).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == trainable  # every trained weight moved; every other one is bitwise the same


def test_load_pixart_reads_a_local_folder_in_pixart_alphas_layout_and_names_a_missing_one(tmp_path):
    from bundle.errors import InputError
    from bundle.networks.vgmedgen_dit import load_pixart

    transformer = tiny_pixart(sample_size=16, num_layers=1, seed=4)
    transformer.save_pretrained(tmp_path / "pixart" / "transformer")
    config = tmp_path / "pixart" / "transformer" / "config.json"
    config.write_text(config.read_text().replace('"PixArtTransformer2DModel"', '"Transformer2DModel"'))  # as published
    loaded = DiTDenoiser(load_pixart(tmp_path / "pixart"), trainable="lora")
    latents, tokens, t = torch.randn(1, 1, 16, 16), torch.randn(1, 2, 96), torch.tensor([50])
    with torch.no_grad():
        torch.testing.assert_close(loaded(latents, t, tokens), DiTDenoiser(transformer)(latents, t, tokens))
    with pytest.raises(InputError, match="config.json"):
        load_pixart(tmp_path / "elsewhere")


def test_the_trained_parts_round_trip_and_a_file_of_another_layout_is_refused(tmp_path):
    from bundle.errors import InputError

    model = small(seed=5, trainable="lora")
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))
    assert all(n.startswith("fusion.") or "lora_" in n for n in model.trained_state_dict())
    model.save_trained(tmp_path / "g.safetensors")
    fresh = small(seed=5, trainable="lora")
    fresh.load_trained(tmp_path / "g.safetensors")
    latents, t, conditions = torch.randn(2, 1, 16, 16), torch.tensor([9, 99]), model.conditions(TEXTS)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(latents, t, conditions), model.eval()(latents, t, conditions))
    with pytest.raises(InputError, match="g.safetensors"):
        small(seed=5, trainable="lora", fusion_mode="concat").load_trained(tmp_path / "g.safetensors")
    with pytest.raises(InputError, match="g.safetensors"):
        small(seed=5).load_trained(tmp_path / "g.safetensors")  # a full DiT expects all of its weights


def test_without_disentanglement_only_concat_fusion_and_no_disentangler_are_accepted():
    with pytest.raises(ValueError, match="give no disentangler and fusion_mode 'concat'.*'hffm'"):
        tiny_generator(16, disentangle=False, num_layers=1)
