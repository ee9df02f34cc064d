"""MedSoft-Diffusion's networks: the conditions interface of a conditioned diffusion model, the frozen medical CLIP,
the Medical Semantic Controller (MSC), the text condition, the guided UNet (decoupled cross-attention for e_MSC),
the diffusion space, the whole model with its profiles and saved form, the speed options, the downstream
experiment's slice classifier, MedDiff-FT's inpainting model and lesion-mask generator (a shape DDPM with
hierarchical randomness) and VG-MedGen's visual (anatomy / style) and text disentanglement, hybrid feature fusion,
PixArt DiT and generator."""

from bundle.networks.conditions import (
    ConditionedDiffusionModel,
    Conditions,
    check_condition_dropout,
    concat_conditions,
    draw_condition_dropout,
    drop_conditions,
    guidance_null_conditions,
)
from bundle.networks.diffusion_space import LatentSpace, PixelSpace
from bundle.networks.guided_unet import GuidedUNet, load_unet, tiny_unet, trainable_without_msc
from bundle.networks.meddiffft_inpainting import InpaintingDiffusion, sd_inpaint_model, tiny_inpainting_model
from bundle.networks.meddiffft_mask_generator import HierarchicalMaskSampler, LesionGeometry, LesionShapeModel
from bundle.networks.medical_clip import MedicalClipEncoder
from bundle.networks.medsoft_diffusion import (
    MedSoftDiffusion,
    load_trained,
    load_trained_weights,
    save_trained,
    sd15_model,
    tiny_model,
    trained_architecture,
)
from bundle.networks.semantic_controller import MedicalSemanticController
from bundle.networks.slice_classifier import SliceBagClassifier
from bundle.networks.speed_options import SpeedOptions, optimise_unet
from bundle.networks.text_states import ClipTowerTextStates, StableDiffusionTextStates
from bundle.networks.text_truncation import warn_truncated_text
from bundle.networks.vgmedgen_dit import DiTDenoiser, load_pixart, tiny_pixart
from bundle.networks.vgmedgen_fusion import HybridFeatureFusion
from bundle.networks.vgmedgen_generator import VGMedGen, tiny_generator
from bundle.networks.vgmedgen_text import TextDisentangler
from bundle.networks.vgmedgen_visual import AnatomyEncoder, SegmentationHead, StyleVAE, VisualDisentangler

__all__ = [
    "guidance_null_conditions",
    "tiny_inpainting_model",
    "sd_inpaint_model",
    "InpaintingDiffusion",
    "AnatomyEncoder",
    "SegmentationHead",
    "StyleVAE",
    "TextDisentangler",
    "DiTDenoiser",
    "HybridFeatureFusion",
    "VGMedGen",
    "load_pixart",
    "tiny_generator",
    "tiny_pixart",
    "VisualDisentangler",
    "ClipTowerTextStates",
    "ConditionedDiffusionModel",
    "Conditions",
    "GuidedUNet",
    "HierarchicalMaskSampler",
    "LatentSpace",
    "LesionGeometry",
    "LesionShapeModel",
    "MedSoftDiffusion",
    "MedicalClipEncoder",
    "MedicalSemanticController",
    "PixelSpace",
    "SliceBagClassifier",
    "SpeedOptions",
    "StableDiffusionTextStates",
    "check_condition_dropout",
    "concat_conditions",
    "draw_condition_dropout",
    "drop_conditions",
    "load_trained",
    "load_trained_weights",
    "trained_architecture",
    "load_unet",
    "optimise_unet",
    "save_trained",
    "sd15_model",
    "tiny_model",
    "tiny_unet",
    "trainable_without_msc",
    "warn_truncated_text",
]
