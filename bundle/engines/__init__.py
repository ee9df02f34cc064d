"""MONAI trainers and evaluators: the diffusion trainer every conditioned diffusion model shares, stage 1 (the MSC),
stage 2 (the guided UNet), the loss-terms trainer of VG-MedGen's stages V and T (the disentanglers), its stage G
(fusion + DiT), MedDiff-FT's inpainting trainer with its random host masks, the synthesis evaluator, and the
case-by-case synthesis job the inference config runs."""

from bundle.engines.diffusion_trainer import DiffusionTrainer
from bundle.engines.guided_diffusion_trainer import GuidedDiffusionTrainer, medsoft_condition_dropout
from bundle.engines.inpainting_trainer import InpaintingDiffusionTrainer, RandomHostMasks
from bundle.engines.loss_terms_trainer import LossTermsTrainer
from bundle.engines.semantic_controller_trainer import SemanticControllerEvaluator, SemanticControllerTrainer
from bundle.engines.synthesis_evaluator import SynthesisEvaluator
from bundle.engines.synthesis_job import CaseByCaseEvaluator, DiffusionPredictor, KeyPredictor, SynthesisJob, case_seed
from bundle.engines.trainable import require_gradients, trainable_parameters
from bundle.engines.utils import batch_to_device, unwrap
from bundle.engines.vgmedgen_disentangle_trainers import TextDisentangleTrainer, VisualDisentangleTrainer
from bundle.engines.vgmedgen_trainer import VGMedGenTrainer

__all__ = [
    "RandomHostMasks",
    "InpaintingDiffusionTrainer",
    "CaseByCaseEvaluator",
    "DiffusionPredictor",
    "DiffusionTrainer",
    "GuidedDiffusionTrainer",
    "KeyPredictor",
    "LossTermsTrainer",
    "SemanticControllerEvaluator",
    "SemanticControllerTrainer",
    "SynthesisEvaluator",
    "SynthesisJob",
    "TextDisentangleTrainer",
    "VGMedGenTrainer",
    "VisualDisentangleTrainer",
    "batch_to_device",
    "case_seed",
    "medsoft_condition_dropout",
    "require_gradients",
    "trainable_parameters",
    "unwrap",
]
