"""Serving the bundle to hosts (MONAI Label, MONAI Deploy, a web service): the inference workflow loaded once."""

from bundle.serving.synthesizer import Synthesis, Synthesizer

__all__ = ["Synthesis", "Synthesizer"]
