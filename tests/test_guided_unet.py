"""The guided UNet's decoupled cross-attention: gamma = 0 is the base UNet, the right parameters train,
adapter weights survive saving, and the initialisation copies the layer's own keys and values."""

from __future__ import annotations

import copy

import pytest
import torch

from bundle.errors import InputError
from bundle.guided_unet import GuidedUNet, cross_attention_layers, load_unet, tiny_unet

MSC_DIM = 24


def inputs(batch: int = 2, size: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 1, size, size, generator=generator), torch.tensor([10, 500][:batch]),
            torch.randn(batch, 7, 64, generator=generator), torch.randn(batch, 4, MSC_DIM, generator=generator))


def test_every_cross_attention_layer_gets_the_msc_attention_initialised_from_its_own_keys():
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM)
    layers = cross_attention_layers(guided.unet)
    assert len(layers) == 7  # 2 down levels + middle + 4 up attentions in the tiny layout
    for _, attention in layers:
        processor = attention.processor
        assert type(processor).__name__ == "IPAdapterAttnProcessor2_0"
        assert torch.equal(processor.to_k_ip[0].weight, attention.to_k.weight)
        assert torch.equal(processor.to_v_ip[0].weight, attention.to_v.weight)


def test_gamma_zero_equals_the_base_unet_and_gamma_one_does_not():
    base = tiny_unet(sample_size=32)
    reference = copy.deepcopy(base)
    guided = GuidedUNet(base, msc_dim=MSC_DIM, scale=0.0)
    sample, timestep, text, msc = inputs()
    with torch.no_grad():
        expected = reference(sample, timestep, encoder_hidden_states=text).sample
        assert torch.allclose(guided(sample, timestep, text, msc), expected, atol=1e-6)
        guided.scale = 1.0
        assert not torch.allclose(guided(sample, timestep, text, msc), expected, atol=1e-3)


def test_the_msc_tokens_change_the_prediction():
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM)
    sample, timestep, text, msc = inputs()
    with torch.no_grad():
        assert not torch.allclose(guided(sample, timestep, text, msc), guided(sample, timestep, text, msc * 0))


def _receiving_gradients(guided: GuidedUNet) -> set[str]:
    sample, timestep, text, msc = inputs()
    guided(sample, timestep, text, msc).pow(2).mean().backward()
    return {name for name, p in guided.unet.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("trainable", ["adapter", "adapter+projection", "lora", "full"])
def test_only_the_intended_parameters_receive_gradients(trainable):
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM, trainable=trainable)
    names = _receiving_gradients(guided)
    adapter = {n for n in names if ".processor.to_k_ip." in n or ".processor.to_v_ip." in n}
    assert len(adapter) == 2 * len(cross_attention_layers(guided.unet))
    projection = {n for n in names if n.startswith("encoder_hid_proj.")}
    lora = {n for n in names if "lora_" in n}
    if trainable == "adapter":
        assert names == adapter
    elif trainable == "adapter+projection":
        assert projection and names == adapter | projection
    elif trainable == "lora":
        assert lora and names == adapter | projection | lora
    else:
        assert len(names) > len(adapter | projection) and any(".conv_in." in n or "conv_in" in n for n in names)


def test_adapter_and_base_survive_save_and_load(tmp_path):
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM, scale=0.7)
    with torch.no_grad():
        for processor in guided.adapter_processors:
            processor.to_k_ip[0].weight.add_(0.1)  # trained weights differ from the to_k initialisation
    guided.save_adapter(tmp_path / "adapter.safetensors")
    guided.save_base(tmp_path / "unet")
    settings = GuidedUNet.adapter_settings(tmp_path / "adapter.safetensors")
    assert settings["msc_dim"] == MSC_DIM and settings["scale"] == pytest.approx(0.7)
    loaded = GuidedUNet(load_unet(tmp_path / "unet"), msc_dim=MSC_DIM, scale=settings["scale"])
    sample, timestep, text, msc = inputs()
    with torch.no_grad():
        before_loading = loaded(sample, timestep, text, msc)
        loaded.load_adapter(tmp_path / "adapter.safetensors")
        expected = guided(sample, timestep, text, msc)
        assert not torch.allclose(before_loading, expected, atol=1e-4)
        assert torch.allclose(loaded(sample, timestep, text, msc), expected, atol=1e-6)


def test_diffusers_save_pretrained_alone_loses_the_adapter(tmp_path):
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM)
    guided.save_base(tmp_path / "unet")
    plain = load_unet(tmp_path / "unet")
    assert not any(".processor." in name for name in plain.state_dict())
    assert plain.encoder_hid_proj is None


def test_wrong_adapter_file_and_missing_unet_folder_are_named(tmp_path):
    GuidedUNet(tiny_unet(sample_size=32, block_out_channels=(32, 64)), msc_dim=MSC_DIM).save_adapter(
        tmp_path / "small.safetensors")
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM)
    with pytest.raises(InputError, match="small.safetensors.*do not fit"):
        guided.load_adapter(tmp_path / "small.safetensors")
    with pytest.raises(InputError, match="config.json is missing"):
        load_unet(tmp_path / "no_such_unet")
