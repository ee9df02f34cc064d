"""What the demo phantom's ``difficulty`` knob (0 = easy, 1 = hard) sets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DifficultySettings:
    """What the ``difficulty`` knob (0 = easy, 1 = hard) sets; signals are relative to fat = 1.

    Attributes:
        lesion_diameter_mm: range of the sampled lesion diameter, mm (12-22 at 0, 8.5-16 at 0.5, 5-10 at 1),
            then capped so the lesion fits inside the vertebral body's marrow.
        lesion_contrast: range of the peak relative change of marrow signal in the lesion
            (0.40-0.65 at 0, 0.225-0.395 at 0.5, 0.05-0.14 at 1).
        noise_sigma: Rician noise standard deviation relative to fat (0.010 at 0, 0.040 at 0.5, 0.070 at 1).
        bias_amplitude: log-amplitude of the multiplicative bias field (0.10, 0.275, 0.45).
        marrow_texture: standard deviation of the multiplicative marrow texture, half fine (0.8 mm) and half
            patchy (4 mm) (0.04, 0.12, 0.20).
        incidental_findings_mean: mean number of fatty marrow islands and Modic endplate changes per case,
            placed outside the described level (0.2, 2.1, 4.0); they mimic small lesions.
        height_loss_probability: chance that a malignant lesion comes with an anterior wedge (0.6, 0.45, 0.3).
        height_loss_fraction: range of the anterior height lost (0.20-0.45 at 0, 0.15-0.35 at 0.5,
            0.10-0.25 at 1).
    """

    lesion_diameter_mm: tuple[float, float]
    lesion_contrast: tuple[float, float]
    noise_sigma: float
    bias_amplitude: float
    marrow_texture: float
    incidental_findings_mean: float
    height_loss_probability: float
    height_loss_fraction: tuple[float, float]


def difficulty_settings(difficulty: float) -> DifficultySettings:
    """Linear interpolation of every setting between its easy (0) and hard (1) value; see the class.

    Raises:
        ValueError: if ``difficulty`` is not a number in [0, 1].
    """
    if isinstance(difficulty, bool) or not isinstance(difficulty, (int, float)) or not 0 <= difficulty <= 1:
        raise ValueError(f"difficulty must be a number in [0, 1], got {difficulty!r}")

    def between(easy: float, hard: float) -> float:
        return easy + (hard - easy) * float(difficulty)

    return DifficultySettings(
        lesion_diameter_mm=(between(12.0, 5.0), between(22.0, 10.0)),
        lesion_contrast=(between(0.40, 0.05), between(0.65, 0.14)),
        noise_sigma=between(0.010, 0.070),
        bias_amplitude=between(0.10, 0.45),
        marrow_texture=between(0.04, 0.20),
        incidental_findings_mean=between(0.2, 4.0),
        height_loss_probability=between(0.6, 0.3),
        height_loss_fraction=(between(0.20, 0.10), between(0.45, 0.25)),
    )
