"""Radiology-style descriptions of a vertebral level, built only from its lesion attributes.

The phrasing (sentence template, modality prefix, synonyms of the diagnosis) is picked with the caller's
random generator; every fact in the sentence — level, position, diameter in mm, signal and its strength,
margin, striations, height loss, posterior cortical bulge, diagnosis — is read from the attributes, so two
descriptions of the same attributes differ in wording only.

The attributes are the JSON form written by :class:`bundle.demo.lesions.LesionAttributes` (``to_json``)::

    {"lesion_class": "benign" | "malignant" | "normal", "level": "L1".."L5",
     "position_ap": "anterior" | "central" | "posterior" | None,
     "position_si": "superior" | "mid" | "inferior" | None,
     "size_mm": int, "signal": "hyperintense" | "hypointense" | "normal", "contrast": float,
     "margin": "well-defined" | "ill-defined" | None, "striations": bool,
     "height_loss_percent": int, "posterior_bulge": bool,
     "diagnosis": "haemangioma" | "metastasis" | "myeloma" | None, ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

MODALITY_PREFIXES = (
    "T1-weighted sagittal lumbar spine MRI: ",
    "Sagittal T1-weighted MRI of the lumbar spine: ",
)

# (AP position, SI position) -> adjective placed before "<level> vertebral body".
LOCATION_WORDS = {
    ("anterior", "superior"): "anterosuperior",
    ("anterior", "mid"): "anterior",
    ("anterior", "inferior"): "anteroinferior",
    ("central", "superior"): "superior",
    ("central", "mid"): "central",
    ("central", "inferior"): "inferior",
    ("posterior", "superior"): "posterosuperior",
    ("posterior", "mid"): "posterior",
    ("posterior", "inferior"): "posteroinferior",
}

_DIAGNOSIS_PHRASES = {
    "haemangioma": ("a benign haemangioma", "a vertebral haemangioma", "a typical haemangioma"),
    "metastasis": ("metastasis", "metastatic disease", "a vertebral metastasis"),
    "myeloma": ("myeloma", "a plasma cell neoplasm (myeloma)", "a myeloma deposit"),
}

_BENIGN_TEMPLATES = (
    (
        "{prefix}a well-circumscribed {size} mm {strength}{signal} lesion in the {location} {level} vertebral "
        "body{striations}, without height loss, consistent with {diagnosis}."
    ),
    (
        "{prefix}{size} mm sharply marginated, {strength}T1-{signal} round lesion within the {location} "
        "{level} vertebral body{striations}; vertebral body height is preserved. Appearance of {diagnosis}."
    ),
    (
        "{prefix}there is a well-defined {strength}{signal} {size} mm focus in the {location} portion of the "
        "{level} vertebral body{striations}, with no height loss, compatible with {diagnosis}."
    ),
)

_MALIGNANT_TEMPLATES = (
    (
        "{prefix}an ill-defined {size} mm {strength}{signal} lesion replacing the {location} {level} vertebral "
        "body marrow{deformity}, suspicious for {diagnosis}."
    ),
    (
        "{prefix}irregular, poorly marginated {strength}T1-{signal} marrow-replacing lesion measuring {size} mm "
        "in the {location} {level} vertebral body{deformity}; findings suspicious for {diagnosis}."
    ),
    (
        "{prefix}there is an infiltrative {size} mm {strength}{signal} lesion with ill-defined margins in the "
        "{location} portion of the {level} vertebral body{deformity}, concerning for {diagnosis}."
    ),
)

_NORMAL_TEMPLATES = (
    "{prefix}normal {level} vertebral body with homogeneous marrow signal, no focal lesion.",
    (
        "{prefix}the {level} vertebral body has normal height and homogeneous fatty marrow signal; no focal "
        "marrow lesion."
    ),
    "{prefix}no focal marrow lesion at {level}; the vertebral body is of normal height and signal.",
)

MILD_CONTRAST = 0.2
MARKED_CONTRAST = 0.45


def signal_strength_word(contrast: float) -> str:
    """Adverb for a relative marrow-signal change ``contrast`` (0.15 = 15 %): "mildly ", "" or "markedly "."""
    if contrast < MILD_CONTRAST:
        return "mildly "
    if contrast >= MARKED_CONTRAST:
        return "markedly "
    return ""


def deformity_phrase(height_loss_percent: int, posterior_bulge: bool) -> str:
    bulge = "convex bulging of the posterior cortex"
    if height_loss_percent > 0 and posterior_bulge:
        return f" with {height_loss_percent}% anterior height loss and {bulge}"
    if height_loss_percent > 0:
        return f" with {height_loss_percent}% anterior height loss"
    if posterior_bulge:
        return f" with {bulge}, without height loss"
    return " without height loss"


def describe_case(attributes: Mapping[str, Any], rng: np.random.Generator) -> str:
    """One-sentence report of the described vertebral level.

    Args:
        attributes: the lesion attributes (see the module docstring); ``lesion_class`` picks the template set.
        rng: chooses the template and synonyms only.

    Returns:
        e.g. "T1-weighted sagittal lumbar spine MRI: a well-circumscribed 14 mm hyperintense lesion in the
        central L3 vertebral body, without height loss, consistent with a benign haemangioma."

    Raises:
        ValueError: for an unknown ``lesion_class``.
    """
    lesion_class = attributes["lesion_class"]
    prefix = MODALITY_PREFIXES[rng.integers(len(MODALITY_PREFIXES))]
    if lesion_class == "normal":
        template = _NORMAL_TEMPLATES[rng.integers(len(_NORMAL_TEMPLATES))]
        return template.format(prefix=prefix, level=attributes["level"])
    if lesion_class not in ("benign", "malignant"):
        raise ValueError(f"unknown lesion class {lesion_class!r} (expected normal, benign or malignant)")
    templates = _BENIGN_TEMPLATES if lesion_class == "benign" else _MALIGNANT_TEMPLATES
    template = templates[rng.integers(len(templates))]
    diagnoses = _DIAGNOSIS_PHRASES[attributes["diagnosis"]]
    return template.format(
        prefix=prefix,
        size=attributes["size_mm"],
        strength=signal_strength_word(attributes["contrast"]),
        signal=attributes["signal"],
        location=LOCATION_WORDS[(attributes["position_ap"], attributes["position_si"])],
        level=attributes["level"],
        striations=", with coarse vertical trabecular striations" if attributes["striations"] else "",
        deformity=deformity_phrase(attributes["height_loss_percent"], attributes["posterior_bulge"]),
        diagnosis=diagnoses[rng.integers(len(diagnoses))],
    )
