"""The sampling scheduler, by name, configured for the schedule the model was trained with.

A sampler shares the training scheduler's noise schedule (betas, ``num_train_timesteps``, prediction type) and adds
only what its solver needs: DPM-Solver++ (2M) clips lambda(t) at ``lambda_min_clipped`` = -5.1 for the cosine
(``squaredcos_cap_v2``) schedule, whose lambda(t) falls to about -10 at the last training step and makes the
solver's first step unstable (diffusers' advice for that schedule), and ends on sigma 0. ``timestep_spacing``
overrides the training scheduler's spacing ("trailing" starts few-step runs at the last training step). DDIM and
UniPC have no such clip, so under the cosine schedule they refuse the spacings that start at that step.
"""

from __future__ import annotations

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

COSINE_LAMBDA_MIN_CLIPPED = -5.1
SAMPLERS = ("ddim", "dpmsolver++", "unipc")


def sampling_scheduler(
    training_scheduler: SchedulerMixin, name: str = "ddim", timestep_spacing: str | None = None
) -> SchedulerMixin:
    """The sampler ``name`` (one of :data:`SAMPLERS`) on ``training_scheduler``'s noise schedule.

    Args:
        training_scheduler: the scheduler the model was trained with (its config: betas, prediction type, ...).
        name: "ddim" (DDIM), "dpmsolver++" (DPM-Solver++ 2M) or "unipc" (UniPC, bh2, predicting x0).
        timestep_spacing: "leading", "trailing" or "linspace"; ``None`` keeps the training scheduler's.
    """
    # diffusers would give the sampler its own defaults for what the training scheduler left at its defaults
    config = {k: v for k, v in training_scheduler.config.items() if k != "_use_default_values"}
    if timestep_spacing is not None:
        config["timestep_spacing"] = timestep_spacing
    cosine = config.get("beta_schedule") == "squaredcos_cap_v2"
    if cosine and name != "dpmsolver++" and config.get("timestep_spacing") in ("trailing", "linspace"):
        raise ValueError(
            f"{name} with {config['timestep_spacing']!r} spacing starts at the cosine schedule's last training step, "
            "where alpha_bar is about 2e-9 and the predicted x0 explodes (in-mask PSNR 8 dB on the demo); use "
            "'leading' or dpmsolver++ (its lambda clip)"
        )
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(
            config,
            algorithm_type="dpmsolver++",
            solver_order=2,
            final_sigmas_type="zero",
            lambda_min_clipped=COSINE_LAMBDA_MIN_CLIPPED if cosine else float("-inf"),
        )
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config, solver_order=2, solver_type="bh2", predict_x0=True)
    raise ValueError(f"unknown sampler {name!r}: expected one of {', '.join(SAMPLERS)}")
