"""The frozen CLIP encoders: shapes, unit norms, determinism, frozenness, and offline loading of local folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from bundle.errors import InputError
from bundle.networks.medical_clip import CONFIG_NAME, WEIGHTS_NAME, MedicalClipEncoder
from tests.helpers.tiny_weights import write_tiny_bert

TEXTS = [
    "T1-weighted sagittal lumbar spine MRI: a well-defined 12 mm hyperintense lesion in the L3 vertebral body.",
    "an ill-defined hypointense lesion replacing the L4 vertebral body, consistent with metastasis.",
    "",
]
BIOMED_BERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


@pytest.fixture(scope="module")
def tiny() -> MedicalClipEncoder:
    return MedicalClipEncoder.tiny()


@pytest.fixture(scope="module")
def slices() -> tuple[torch.Tensor, torch.Tensor]:
    """(original, masked) grayscale slices (2, 1, 96, 80) in [0, 1]; the mask blanks a box in each."""
    generator = torch.Generator().manual_seed(1)
    original = torch.rand(2, 1, 96, 80, generator=generator)
    masked = original.clone()
    masked[:, :, 30:70, 20:60] = 0.0
    return original, masked


@pytest.fixture(scope="module")
def saved_tiny(tiny: MedicalClipEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_clip")
    tiny.save_local_dir(folder)
    return folder


def test_tiny_shapes_and_unit_norm(tiny: MedicalClipEncoder, slices: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert (tiny.embed_dim, tiny.text_state_dim, tiny.context_length) == (64, 64, 77)
    e_t = tiny.encode_text(TEXTS)
    states = tiny.text_states(TEXTS)
    e_r = tiny.encode_image(slices[0])
    assert e_t.shape == (3, 64) and states.shape == (3, 77, 64) and e_r.shape == (2, 64)
    for features in (e_t, e_r):
        assert features.dtype == torch.float32
        torch.testing.assert_close(features.norm(dim=-1), torch.ones(len(features)))
    assert states.dtype == torch.float32 and torch.isfinite(states).all()
    # any slice size and dtype: resized to the model's input, float32 out
    odd = tiny.encode_image(torch.rand(1, 1, 33, 150, dtype=torch.float64))
    assert odd.shape == (1, 64) and odd.dtype == torch.float32


def test_tiny_is_deterministic_and_leaves_global_rng(slices: tuple[torch.Tensor, torch.Tensor]) -> None:
    before = torch.random.get_rng_state()
    first, second = MedicalClipEncoder.tiny(seed=0), MedicalClipEncoder.tiny(seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(first.encode_text(TEXTS), second.encode_text(TEXTS))
    assert torch.equal(first.text_states(TEXTS), second.text_states(TEXTS))
    assert torch.equal(first.encode_image(slices[0]), second.encode_image(slices[0]))
    other_seed = MedicalClipEncoder.tiny(seed=1)
    assert not torch.allclose(first.encode_text(TEXTS), other_seed.encode_text(TEXTS))


def test_features_tell_inputs_apart(tiny: MedicalClipEncoder, slices: tuple[torch.Tensor, torch.Tensor]) -> None:
    e_t = tiny.encode_text(TEXTS)
    assert not torch.allclose(e_t[0], e_t[1]) and not torch.allclose(e_t[0], e_t[2])
    states = tiny.text_states(TEXTS)
    assert not torch.allclose(states[0], states[1])
    original, masked = slices
    e_r, e_v = tiny.encode_image(original), tiny.encode_image(masked)
    assert not torch.allclose(e_r, e_v)
    # the batch does not leak between items
    torch.testing.assert_close(tiny.encode_text(TEXTS[1:2]), e_t[1:2])


def test_texts_must_be_strings(tiny: MedicalClipEncoder) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tiny.encode_text(["a lesion", None])
    with pytest.raises(TypeError):
        tiny.text_states(["a lesion", 3])
    with pytest.raises(TypeError):
        tiny.encode_text("a lesion")  # a bare str is not a batch
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        tiny.encode_image(torch.rand(1, 3, 32, 32))


def test_frozen(tiny: MedicalClipEncoder, slices: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert not any(p.requires_grad for p in tiny.parameters())
    tiny.train()
    tiny.train(True)
    assert not any(module.training for module in tiny.modules())
    image = slices[0].clone().requires_grad_(True)
    with torch.enable_grad():
        outputs = [tiny.encode_image(image), tiny.encode_text(TEXTS), tiny.text_states(TEXTS)]
    assert not any(out.requires_grad for out in outputs)
    assert not torch.is_inference(outputs[0])  # no_grad, not inference mode: usable in later autograd graphs


def test_save_and_load_round_trip(
    tiny: MedicalClipEncoder, saved_tiny: Path, slices: tuple[torch.Tensor, torch.Tensor]
) -> None:
    assert {p.name for p in saved_tiny.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME}
    loaded = MedicalClipEncoder.from_local_dir(saved_tiny)
    assert (loaded.embed_dim, loaded.text_state_dim, loaded.context_length) == (64, 64, 77)
    assert loaded.image_size == tiny.image_size and loaded.image_mean == pytest.approx(tiny.image_mean)
    assert torch.equal(loaded.encode_text(TEXTS), tiny.encode_text(TEXTS))
    assert torch.equal(loaded.text_states(TEXTS), tiny.text_states(TEXTS))
    assert torch.equal(loaded.encode_image(slices[1]), tiny.encode_image(slices[1]))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    # the folder is a genuine open_clip local-dir
    assert isinstance(open_clip.create_model(f"local-dir:{saved_tiny}"), open_clip.CustomTextCLIP)


def test_load_pickled_weights(tiny: MedicalClipEncoder, saved_tiny: Path, tmp_path: Path) -> None:
    """open_clip_pytorch_model.bin (BiomedCLIP's weight file) loads through torch.load(weights_only=True)."""
    (tmp_path / CONFIG_NAME).write_text((saved_tiny / CONFIG_NAME).read_text())
    torch.save(tiny.model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    loaded = MedicalClipEncoder.from_local_dir(tmp_path)
    assert torch.equal(loaded.encode_text(TEXTS), tiny.encode_text(TEXTS))


def test_missing_folder_config_or_weights(saved_tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder not found") as error:
        MedicalClipEncoder.from_local_dir(tmp_path / "nowhere")
    assert error.value.source == str(tmp_path / "nowhere")

    with pytest.raises(InputError, match=f"{CONFIG_NAME} is missing.*BiomedCLIP") as error:
        MedicalClipEncoder.from_local_dir(tmp_path)
    assert error.value.source == str(tmp_path / CONFIG_NAME)

    (tmp_path / CONFIG_NAME).write_text((saved_tiny / CONFIG_NAME).read_text())
    with pytest.raises(InputError, match="no weight file.*open_clip_model.safetensors") as error:
        MedicalClipEncoder.from_local_dir(tmp_path)
    assert error.value.source == str(tmp_path)

    (tmp_path / CONFIG_NAME).write_text(json.dumps({"embed_dim": 64}))
    with pytest.raises(InputError, match="model_cfg"):
        MedicalClipEncoder.from_local_dir(tmp_path)


# ---------------------------------------------------------------------- Hugging Face text tower (BiomedCLIP)
@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, open_clip.CustomTextCLIP]:
    """A BiomedCLIP-shaped local-dir (text tower named after BiomedBERT) + the tiny BERT folder + its model."""
    root = tmp_path_factory.mktemp("hf_clip")
    bert_dir = write_tiny_bert(root / "bert", context_length=24)
    text_cfg = {
        "hf_model_name": BIOMED_BERT,
        "hf_tokenizer_name": BIOMED_BERT,
        "hf_proj_type": "mlp",
        "hf_pooler_type": "cls_last_hidden_state_pooler",
        "context_length": 24,
    }
    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": text_cfg,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.CustomTextCLIP(
            **{**model_cfg, "text_cfg": {**text_cfg, "hf_model_name": str(bert_dir), "hf_model_pretrained": False}}
        ).eval()
    clip_dir = root / "clip"
    clip_dir.mkdir()
    (clip_dir / CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(clip_dir / WEIGHTS_NAME))
    return clip_dir, bert_dir, model


def test_hf_text_tower(hf_clip: tuple[Path, Path, open_clip.CustomTextCLIP]) -> None:
    clip_dir, bert_dir, source = hf_clip
    offline_before = os.environ.get("HF_HUB_OFFLINE")
    encoder = MedicalClipEncoder.from_local_dir(clip_dir, text_model_dir=bert_dir)
    assert os.environ.get("HF_HUB_OFFLINE") == offline_before
    assert (encoder.embed_dim, encoder.text_state_dim, encoder.context_length) == (16, 32, 24)
    e_t = encoder.encode_text(TEXTS)
    states = encoder.text_states(TEXTS)
    assert e_t.shape == (3, 16) and states.shape == (3, 24, 32)
    torch.testing.assert_close(e_t.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(e_t[0], e_t[1])
    # the weights come from the CLIP weight file: same features as the model that wrote it
    ids = encoder.tokenizer(TEXTS)
    with torch.no_grad():
        expected = source.text.transformer(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        torch.testing.assert_close(e_t, F.normalize(source.encode_text(ids), dim=-1))
    torch.testing.assert_close(states, expected)
    assert encoder.encode_image(torch.rand(2, 1, 50, 40)).shape == (2, 16)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_hf_text_tower_needs_local_text_model(
    hf_clip: tuple[Path, Path, open_clip.CustomTextCLIP], tmp_path: Path
) -> None:
    clip_dir, bert_dir, _ = hf_clip
    with pytest.raises(InputError, match=f"{BIOMED_BERT}.*text_model_dir") as error:
        MedicalClipEncoder.from_local_dir(clip_dir)
    assert error.value.source == str(clip_dir / CONFIG_NAME)

    with pytest.raises(InputError, match="text_model_dir not found"):
        MedicalClipEncoder.from_local_dir(clip_dir, text_model_dir=tmp_path / "nowhere")

    with pytest.raises(InputError, match="config.json is missing") as error:
        MedicalClipEncoder.from_local_dir(clip_dir, text_model_dir=tmp_path)
    assert error.value.source == str(tmp_path / "config.json")

    (tmp_path / "config.json").write_text((bert_dir / "config.json").read_text())
    with pytest.raises(InputError, match="vocab.txt"):
        MedicalClipEncoder.from_local_dir(clip_dir, text_model_dir=tmp_path)
