"""Item 5: stage-2 training throughput against a minimal plain-PyTorch diffusers training loop.

Both train the same network (``configs/train.json``'s tiny model, freshly initialised, all weights) with the
same optimiser settings, loss, noise scheduler, data loader and batch; ours is
:class:`bundle.engines.guided_diffusion_trainer.GuidedDiffusionTrainer` (MONAI / ignite engine, condition dropout,
per-iteration StatsHandler and TensorBoard logging, as in the config), the reference is the loop of diffusers'
``train_text_to_image.py`` reduced to its core: next batch, encode the conditions, noise, UNet, loss,
backward, step. The data-wait share is the time spent fetching batches (ignite's GET_BATCH events) over the
run: the slices are preprocessed once into the disk cache of :class:`bundle.data.slice_dataset.SliceDataset`
(``<output_dir>/cache``), so only reading an item's small file and collation remain.
"""

from __future__ import annotations

import copy
import time

import torch
from monai.handlers import StatsHandler, TensorBoardStatsHandler

from benchmarks.common import Context, Record, compare, interleaved
from bundle.engines.guided_diffusion_trainer import GuidedDiffusionTrainer
from bundle.networks.speed_options import optimise_unet

REFERENCE = (
    "a minimal plain-PyTorch diffusers training loop (train_text_to_image.py's core) on the same model, "
    "data loader, optimiser and loss"
)


def stage2_objects(ctx: Context) -> dict[str, object]:
    """The config's network, optimiser settings, loss, noise scheduler and data loader."""
    data = ctx.data()
    parser = ctx.parser(
        ["train.json"],
        dataset_dir=str(data["dir"]),
        datalist=str(data["datalist"]),
        stage1_dir=str(ctx.models_dir()),
        models_dir=str(ctx.work_dir / "train_models"),
        output_dir=str(ctx.work_dir / "train_runs"),
        device=f"$torch.device('{ctx.device}')",
    )
    return {
        key: parser.get_parsed_content(key)
        for key in (
            "network",
            "loss",
            "noise_scheduler",
            "train#dataloader",
            "learning_rate",
            "weight_decay",
            "condition_dropout",
            "batch_size",
            "precision",
        )
    }


class Batches:
    """An endless iterator over a data loader (a new epoch when one ends)."""

    def __init__(self, loader) -> None:
        self.loader, self.iterator = loader, iter(loader)

    def __next__(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)


def plain_loop(
    network,
    optimizer,
    loss_function,
    noise_scheduler,
    batches: Batches,
    steps: int,
    device: torch.device,
    timing: dict | None = None,
) -> None:
    """``steps`` iterations of the reference loop."""
    network.train()
    for _ in range(steps):
        started = time.perf_counter()
        batch = next(batches)
        if timing is not None:
            timing["wait"] += time.perf_counter() - started
        images = batch["image"].to(device)
        soft_mask = batch["soft_mask"].to(device)
        with torch.no_grad():
            conditions = network.conditions(list(batch["text"]), batch["masked_image"].to(device))
        latents = network.space.encode(images)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        predicted = network(noisy, timesteps, conditions)
        loss = loss_function(predicted, noise, network.space.mask(soft_mask, latents))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def make_trainer(objects: dict, network, optimizer, ctx: Context, steps: int, log_dir) -> GuidedDiffusionTrainer:
    def output(engine_output: dict) -> float:
        return engine_output["loss"].item()

    trainer = GuidedDiffusionTrainer(
        noise_scheduler=objects["noise_scheduler"],
        condition_dropout_probabilities=objects["condition_dropout"],
        precision=objects["precision"],
        device=ctx.device,
        max_epochs=1,
        epoch_length=steps,
        train_data_loader=objects["train#dataloader"],
        network=network,
        optimizer=optimizer,
        loss_function=objects["loss"],
        train_handlers=[
            StatsHandler(tag_name="train_loss", output_transform=output),
            TensorBoardStatsHandler(log_dir=str(log_dir), tag_name="train_loss", output_transform=output),
        ],
    )
    trainer.data_wait = 0.0

    def started(engine) -> None:
        engine.fetch_started = time.perf_counter()

    def completed(engine) -> None:
        engine.data_wait += time.perf_counter() - engine.fetch_started

    from ignite.engine import Events

    trainer.add_event_handler(Events.GET_BATCH_STARTED, started)
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, completed)
    return trainer


def optimiser_for(objects: dict, network) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        [p for p in network.parameters() if p.requires_grad],
        lr=objects["learning_rate"],
        weight_decay=objects["weight_decay"],
    )


def run(ctx: Context) -> list[Record]:
    objects = stage2_objects(ctx)
    network = objects["network"]
    batch_size = int(objects["batch_size"])
    steps, repeats = (2, 3) if ctx.quick else (4, 5)
    data = ctx.data()
    shape = (
        f"configs/train.json tiny model (all weights train), batch {batch_size}, 1x48x48 slices, "
        f"{steps} iterations per timed run, data: {data['source']}; precision "
        f"{objects['precision']!r} (float32 on the CPU)"
    )

    def ours_candidate(net, label):
        optimizer = optimiser_for(objects, net)
        trainer = make_trainer(objects, net, optimizer, ctx, steps, ctx.work_dir / f"tb_{label}")
        stats: dict[str, list[float]] = {"wait": [], "total": []}

        def call():
            trainer.data_wait = 0.0
            # one more epoch of `steps` iterations on the same engine (ignite would reset a finished engine
            # to an epoch of the whole data loader)
            trainer.state.max_epochs = max(trainer.state.max_epochs, trainer.state.epoch + 1)
            started = time.perf_counter()
            trainer.run()
            stats["total"].append(time.perf_counter() - started)
            stats["wait"].append(trainer.data_wait)

        return call, stats

    def plain_candidate(net):
        optimizer = optimiser_for(objects, net)
        batches = Batches(objects["train#dataloader"])
        stats = {"wait": 0.0}
        return (
            lambda: plain_loop(
                net, optimizer, objects["loss"], objects["noise_scheduler"], batches, steps, ctx.device, stats
            )
        ), stats

    ours, ours_stats = ours_candidate(network, "ours")
    plain, plain_stats = plain_candidate(network)
    times = interleaved({"ours": ours, "reference": plain}, repeats=repeats, device=ctx.device)
    samples = steps * batch_size
    per_sample_ours = [t / samples for t in times["ours"]]
    per_sample_reference = [t / samples for t in times["reference"]]
    record = compare(
        "stage-2 training throughput",
        5,
        per_sample_ours,
        per_sample_reference,
        REFERENCE,
        "throughput >= 0.9x the plain loop (time ratio <= 1.111)",
        1 / 0.9,
        shape,
        "ours_s / reference_s are seconds per sample; ours adds the engine, condition dropout and "
        "per-iteration logging (StatsHandler, TensorBoard)",
    )
    record.extra.update(
        samples_per_s_ours=1 / record.ours_s,
        samples_per_s_reference=1 / record.reference_s,
        reference_data_wait_s=plain_stats["wait"],
    )
    records = [record]
    # per run of ours (the warm-up run too): the time spent fetching batches against the whole run's
    wait = compare(
        "data-wait share of a training step",
        5,
        ours_stats["wait"],
        ours_stats["total"],
        "the whole training run's time (ours_s: time spent fetching batches in that run)",
        "< 0.10",
        0.10,
        shape,
        "SliceDataset preprocesses every slice once into its disk cache and reads one file per item",
        measured="the same runs of ours (the warm-up run included), split into waiting for data and the rest",
    )
    wait.value, wait.unit = 100 * wait.ratio, "% of step time"
    records.append(wait)

    if not ctx.quick:
        # the speed options on this device: channels-last and gradient checkpointing, each against float32 NCHW
        for label, options, note in (
            ("channels-last", {"channels_last": True}, "NHWC weights; helps convolutions on tensor-core GPUs"),
            (
                "gradient checkpointing",
                {"gradient_checkpointing": True},
                "recomputes activations in the backward pass: more time for less memory (for SD 1.5 at 512 px)",
            ),
        ):
            variant = optimise_unet(copy.deepcopy(network), **options)
            option_run, _ = ours_candidate(variant, label.replace(" ", "_"))
            option_times = interleaved({"ours": option_run, "reference": ours}, repeats=3, device=ctx.device)
            records.append(
                compare(
                    f"training with {label}",
                    5,
                    [t / samples for t in option_times["ours"]],
                    [t / samples for t in option_times["reference"]],
                    "the same stage-2 training without the option",
                    "report (an option: on where it helps)",
                    None,
                    shape,
                    note,
                )
            )
    return records
