"""The guided UNet's decoupled cross-attention: gamma = 0 is the base UNet, e_MSC goes straight into W'_k / W'_v,
the right parameters train, adapter weights survive saving (an earlier version's file is refused), and the
initialisation copies the layer's own keys and values where the widths agree."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from bundle.engines.trainable import require_gradients, trainable_parameters
from bundle.errors import InputError
from bundle.networks.guided_unet import (
    GuidedUNet,
    cross_attention_layers,
    load_unet,
    tiny_unet,
    trainable_without_msc,
)

MSC_DIM = 24
TEXT_WIDTH = 64  # tiny_unet's cross_attention_dim


def inputs(batch: int = 2, size: int = 32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, 1, size, size, generator=generator),
        torch.tensor([10, 500][:batch]),
        torch.randn(batch, 7, TEXT_WIDTH, generator=generator),
        torch.randn(batch, 1, MSC_DIM, generator=generator),
    )


def test_every_cross_attention_layer_gets_the_msc_attention_initialised_from_its_own_keys():
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=TEXT_WIDTH)  # e_MSC as wide as the text states
    layers = cross_attention_layers(guided.unet)
    assert len(layers) == 7  # 2 down levels + middle + 4 up attentions in the tiny layout
    for _, attention in layers:
        processor = attention.processor
        assert type(processor).__name__ == "IPAdapterAttnProcessor2_0"
        assert torch.equal(processor.to_k_ip[0].weight, attention.to_k.weight)
        assert torch.equal(processor.to_v_ip[0].weight, attention.to_v.weight)


def test_e_msc_goes_straight_into_the_msc_keys_and_values():
    """K' = e_MSC W'_k, V' = e_MSC W'_v (the paper's Eq. 5): no layer, trained or not, sits in between."""
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM)
    assert not list(guided.unet.encoder_hid_proj.parameters())
    seen = []
    for processor in guided.adapter_processors:
        assert processor.to_k_ip[0].in_features == processor.to_v_ip[0].in_features == MSC_DIM
        processor.to_v_ip[0].register_forward_hook(lambda module, args, output: seen.append(args[0]))
    sample, timestep, text, msc = inputs()
    with torch.no_grad():
        guided(sample, timestep, text, msc)
    assert len(seen) == len(guided.adapter_processors)
    for values in seen:
        torch.testing.assert_close(values, msc, rtol=0, atol=0)


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


@pytest.mark.parametrize("trainable", ["adapter", "lora", "full"])
def test_only_the_intended_parameters_receive_gradients(trainable):
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM, trainable=trainable)
    names = _receiving_gradients(guided)
    trained = {name for name, p in guided.unet.named_parameters() if p.requires_grad}
    values = {n for n in trained if ".processor.to_v_ip." in n}
    keys = {n for n in trained if ".processor.to_k_ip." in n}
    assert len(values) == len(keys) == len(cross_attention_layers(guided.unet))
    assert values <= names  # one e_MSC token: the softmax over its single key is 1, so W'_k gets no gradient
    lora = {n for n in names if "lora_" in n}
    if trainable == "adapter":
        assert trained == values | keys
    elif trainable == "lora":
        assert lora and names - keys == values | lora
    else:
        assert len(names) > len(values) and any("conv_in" in n for n in names)


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


def test_an_adapter_file_of_the_version_with_a_projection_is_refused(tmp_path):
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM)
    earlier = {
        **guided.adapter_state_dict(),  # what earlier versions saved beside W'_k / W'_v
        "encoder_hid_proj.image_projection_layers.0.image_embeds.weight": torch.zeros(TEXT_WIDTH, MSC_DIM),
        "encoder_hid_proj.image_projection_layers.0.norm.weight": torch.ones(TEXT_WIDTH),
    }
    save_file(earlier, str(tmp_path / "old.safetensors"))
    with pytest.raises(InputError, match="old.safetensors.*earlier version.*straight into W'_k"):
        guided.load_adapter(tmp_path / "old.safetensors")
    settings = {"msc_dim": MSC_DIM, "scale": 1.0, "trainable": "adapter+projection", "lora_rank": 4}
    save_file(earlier, str(tmp_path / "projection.safetensors"), metadata={"guided_unet": json.dumps(settings)})
    with pytest.raises(InputError, match="projection.safetensors.*'adapter\\+projection'.*train stage 2 again"):
        GuidedUNet.adapter_settings(tmp_path / "projection.safetensors")


def test_diffusers_save_pretrained_alone_loses_the_adapter(tmp_path):
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM)
    guided.save_base(tmp_path / "unet")
    plain = load_unet(tmp_path / "unet")
    assert not any(".processor." in name for name in plain.state_dict())
    assert plain.encoder_hid_proj is None


def test_wrong_adapter_file_and_missing_unet_folder_are_named(tmp_path):
    GuidedUNet(tiny_unet(sample_size=32, block_out_channels=(32, 64)), msc_dim=MSC_DIM).save_adapter(
        tmp_path / "small.safetensors"
    )
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM)
    with pytest.raises(InputError, match="small.safetensors.*do not fit"):
        guided.load_adapter(tmp_path / "small.safetensors")
    with pytest.raises(InputError, match="config.json is missing"):
        load_unet(tmp_path / "no_such_unet")


def test_gamma_zero_freezes_the_unused_msc_attention():
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM, scale=0.0, trainable="full")
    trained = {name for name, p in guided.unet.named_parameters() if p.requires_grad}
    assert not {n for n in trained if "_ip." in n}  # diffusers skips the term: W'_k / W'_v would get no gradient
    names = _receiving_gradients(guided)
    assert names and names == trained
    require_gradients(guided)
    assert not [p for p in trainable_parameters(guided.unet) if p.grad is None]
    with pytest.raises(ValueError, match="nothing to train.*'adapter' with msc_scale 0.*ablation_no_msc.json"):
        trainable_parameters(
            torch.nn.ModuleDict(
                {"unet": GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM, scale=0.0, trainable="adapter")}
            )
        )


def test_text_lora_adapts_only_the_text_keys_and_values_of_the_cross_attention():
    """The "without MSC" arm's counterpart of W'_k / W'_v: a LoRA on W_k / W_v of the same layers."""
    assert trainable_without_msc("adapter") == "text_lora" and trainable_without_msc("full") == "full"
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM, scale=0.0, trainable="text_lora", lora_rank=8)
    trained = {name for name, p in guided.unet.named_parameters() if p.requires_grad}
    layers = [name for name, _ in cross_attention_layers(guided.unet)]
    expected = {
        f"{layer}.{projection}.lora_{part}.default.weight"
        for layer in layers
        for projection in ("to_k", "to_v")
        for part in ("A", "B")
    }
    assert trained == expected
    sample, timestep, text, msc = inputs()
    guided(sample, timestep, text, msc).pow(2).mean().backward()
    require_gradients(guided)  # every one of them takes part in the loss
    assert all(name in guided.adapter_state_dict() for name in expected)  # saved with the adapter


def test_a_trainable_parameter_outside_the_loss_is_refused_after_the_first_backward():
    """What the ablation did before: gamma 0 with W'_k / W'_v left trainable trains nothing (and stops DDP)."""
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM, scale=0.0, trainable="adapter")
    for processor in guided.adapter_processors:
        processor.requires_grad_(True)
    sample, timestep, text, msc = inputs()
    assert not guided(sample, timestep, text, msc).requires_grad  # backward would fail with a bare RuntimeError
    with pytest.raises(ValueError, match="no trainable parameter takes part in the loss.*to_k_ip"):
        require_gradients(guided)
    guided = GuidedUNet(tiny_unet(sample_size=32), msc_dim=MSC_DIM, scale=0.0, trainable="full")
    guided.adapter_processors[0].requires_grad_(True)
    guided(sample, timestep, text, msc).pow(2).mean().backward()
    with pytest.raises(ValueError, match="2 of .* trainable parameters take no part in the loss"):
        require_gradients(guided)
