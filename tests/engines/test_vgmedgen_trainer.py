"""VG-MedGen's stage-G trainer: the intensity term's gradient reaches the fusion and the DiT, the whole prompt is
dropped for classifier-free guidance, a short training on toy crops lowers the held-out noise loss and makes
guided samples follow the caption, and the moving average of the weights follows its decay and is exported."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from ignite.engine import Events

from bundle.engines.vgmedgen_trainer import VGMedGenTrainer
from bundle.handlers.export import ExportVGMedGen
from bundle.inferers.guided_sampler import GuidedSampler
from bundle.networks.clinical_text import ClinicalTextEncoder
from bundle.networks.vgmedgen_generator import GENERATOR_FILE, pixart_generator, tiny_generator
from bundle.networks.weight_files import read_safetensors

SIZE = 16
TEXTS = (
    "Malignant vertebra. Style: markedly hyperintense lesion.",
    "Benign vertebra. Style: markedly hypointense lesion.",
)


def toy_crops(count: int, seed: int, texts: tuple[str, str] = TEXTS) -> list[dict]:
    """``count`` crops ``(1, SIZE, SIZE)``: grey marrow with a bright (``texts[0]``) or a dark (``texts[1]``) square."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for i in range(count):
        image = torch.full((1, SIZE, SIZE), 0.5) + 0.03 * torch.randn(1, SIZE, SIZE, generator=generator)
        y, x = torch.randint(2, SIZE - 8, (2,), generator=generator).tolist()
        image[:, y : y + 6, x : x + 6] = 0.9 if i % 2 == 0 else 0.1
        items.append({"image": image.clamp(0, 1), "text": texts[i % 2]})
    return items


def batches(items: list[dict], size: int) -> list[dict]:
    return [
        {
            "image": torch.stack([d["image"] for d in items[i : i + size]]),
            "text": [d["text"] for d in items[i : i + size]],
        }
        for i in range(0, len(items), size)
    ]


def make_trainer(model, data, max_epochs: int = 1, lr: float = 1e-3, **kwargs) -> VGMedGenTrainer:
    return VGMedGenTrainer(
        noise_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear"),
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=data,
        network=model,
        optimizer=torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr),
        loss_function=torch.nn.MSELoss(),
        **kwargs,
    )


def test_the_intensity_term_has_a_gradient_into_the_dit_and_the_fusion():
    model = tiny_generator(spatial_size=SIZE, num_layers=1, seed=3)
    trainer = make_trainer(model, [])
    batch = batches(toy_crops(4, seed=0), 4)[0]
    latents = model.space.encode(batch["image"])
    noise = torch.randn_like(latents)
    timesteps = torch.tensor([10, 100, 300, 800])
    exact = trainer.intensity_term(noise, noise, latents, timesteps)  # a perfect prediction gives x0_hat = x0
    assert exact.abs().item() < 1e-5
    noisy = trainer.noise_scheduler.add_noise(latents, noise, timesteps)
    predicted = model(noisy, timesteps, model.conditions(batch["text"]))
    term = trainer.intensity_term(predicted, noise, latents, timesteps)
    assert term.item() > 0
    term.backward()
    for part in (model.denoiser.transformer.proj_out, model.denoiser.transformer.caption_projection.linear_1):
        assert part.weight.grad.abs().sum() > 0
    assert model.fusion.anatomy[1].weight.grad.abs().sum() > 0 and model.fusion.type_embeddings.grad.abs().sum() > 0


def test_in_latent_space_the_intensity_term_decodes_the_estimate_through_the_vae_with_a_gradient(vgmedgen_pretrained):
    """The full profile (PixArt's VAE): the x0 estimate is decoded on the graph, so the term trains LoRA and the
    fusion; a perfect prediction costs nothing; the frozen VAE gets no gradient."""
    text_encoder = ClinicalTextEncoder.from_folder(vgmedgen_pretrained / "Bio_ClinicalBERT", 16)
    model = pixart_generator(vgmedgen_pretrained / "PixArt-XL-2-512x512", text_encoder, seed=3)
    trainer = make_trainer(model, [], intensity_weight=0.05)
    batch = batches(toy_crops(4, seed=1), 4)[0]
    latents = model.space.encode(batch["image"])
    noise = torch.randn_like(latents)
    timesteps = torch.tensor([10, 100, 300, 800])
    assert trainer.intensity_term(noise, noise, latents, timesteps).abs().item() < 1e-6
    predicted = model(
        trainer.noise_scheduler.add_noise(latents, noise, timesteps), timesteps, model.conditions(batch["text"])
    )
    term = trainer.intensity_term(predicted, noise, latents, timesteps)
    assert term.item() > 0
    term.backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]  # lora_A's gradient is 0 while B starts at 0
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert model.fusion.style[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.space.parameters())


def test_only_items_below_the_timestep_limit_count():
    model = tiny_generator(spatial_size=SIZE, num_layers=1)
    trainer = make_trainer(model, [], intensity_max_timestep=500)
    latents, noise = torch.zeros(2, 1, SIZE, SIZE), torch.zeros(2, 1, SIZE, SIZE)
    wrong = torch.ones(2, 1, SIZE, SIZE)  # shifts x0_hat by a constant: a pure mean error
    both = trainer.intensity_term(wrong, noise, latents, torch.tensor([100, 900]))
    first = trainer.intensity_term(wrong[:1], noise[:1], latents[:1], torch.tensor([100]))
    torch.testing.assert_close(both, first)
    assert trainer.intensity_term(wrong, noise, latents, torch.tensor([600, 900])).item() == 0


def test_condition_dropout_puts_the_null_prompt_in_place_of_the_whole_prompt():
    model = tiny_generator(spatial_size=SIZE, num_layers=1)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[2]))
    make_trainer(model, batches(toy_crops(4, seed=0), 4), condition_dropout=1.0).run()
    null = model.null_conditions(4)
    assert set(seen[0]) == {"anatomy", "style", "text_states"}
    for key, value in seen[0].items():
        torch.testing.assert_close(value, null[key])


def test_gradient_checkpointing_gives_the_same_step():
    losses = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = tiny_generator(spatial_size=SIZE, num_layers=2)
        trainer = make_trainer(model, batches(toy_crops(4, seed=0), 4), gradient_checkpointing=checkpointing)
        torch.manual_seed(1)
        trainer.run()
        assert model.denoiser.transformer.gradient_checkpointing == checkpointing
        losses.append(trainer.state.output["loss"].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def brighter_pairs(model, trainer) -> int:
    """Of 10 seeds, in how many the guided sample of ``TEXTS[0]`` has a higher mean than that of ``TEXTS[1]``."""
    model.eval()
    sampler = GuidedSampler.ddim(trainer.noise_scheduler, num_inference_steps=20, guidance_scale=3.0)
    means = [
        model.space.decode(
            sampler(torch.zeros(10, 1, SIZE, SIZE), model, model.conditions([text] * 10), range(10))
        ).mean(dim=(1, 2, 3))
        for text in TEXTS
    ]
    return int((means[0] > means[1]).sum())


def test_a_short_training_on_toy_crops_lowers_the_held_out_loss_and_guided_samples_follow_the_text():
    """Trained with TEXTS[0] on bright squares, the TEXTS[0] sample is the brighter one seed by seed; trained with the
    captions swapped, the order swaps (so the text, not an untrained model's bias, sets it)."""
    held_out = batches(toy_crops(16, seed=1), 16)[0]
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(16, 1, SIZE, SIZE, generator=generator)
    timesteps = torch.randint(0, 1000, (16,), generator=generator)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")

    def held_out_loss(model) -> float:
        model.eval()
        with torch.no_grad():
            latents = model.space.encode(held_out["image"])
            noisy = scheduler.add_noise(latents, noise, timesteps)
            predicted = model(noisy, timesteps, model.conditions(held_out["text"]))
        return torch.nn.functional.mse_loss(predicted, noise).item()

    pairs = []
    for texts in (TEXTS, TEXTS[::-1]):
        torch.manual_seed(0)
        model = tiny_generator(spatial_size=SIZE, num_layers=2, seed=0)
        start = held_out_loss(model)
        trainer = make_trainer(model, batches(toy_crops(64, seed=0, texts=texts), 8), max_epochs=25, lr=2e-3)
        trainer.run()
        end = held_out_loss(model)
        pairs.append(brighter_pairs(model, trainer))
        print(f"held-out noise MSE {start:.3f} -> {end:.3f}; TEXTS[0] brighter in {pairs[-1]}/10")
        if texts == TEXTS:
            assert end < 0.5 * start
    assert pairs[0] >= 9 and pairs[1] <= 1


def test_the_moving_average_follows_its_decay_and_is_what_is_exported(tmp_path):
    model = tiny_generator(spatial_size=SIZE, num_layers=1, seed=3)
    trainer = make_trainer(model, batches(toy_crops(8, seed=0), 4), lr=1e-2, ema_decay=0.9)
    raw: list[dict[str, torch.Tensor]] = []  # the trained weights after each of the two steps
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda _: raw.append({name: t.clone() for name, t in model.trained_state_dict().items()}),
    )
    ExportVGMedGen(model, tmp_path, trainer.noise_scheduler).attach(trainer)
    trainer.run()
    average = model.trained_state_dict(trainer.ema.module.state_dict())
    assert average.keys() == raw[1].keys() and int(trainer.ema.n_averaged) == 2
    for name, value in average.items():  # the first update copies the weights, the second: 0.9 avg + 0.1 weights
        torch.testing.assert_close(value, 0.9 * raw[0][name] + 0.1 * raw[1][name], rtol=0, atol=1e-6)
    assert not all(torch.equal(value, raw[1][name]) for name, value in average.items())
    exported = read_safetensors(tmp_path / GENERATOR_FILE)
    assert all(torch.equal(exported[name], value) for name, value in average.items())
