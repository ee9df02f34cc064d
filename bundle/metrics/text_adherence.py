"""Text adherence: does the lesion a model made go the way its text says (signal, size, location)?

The text is read for what it asks (:func:`requested_facts`): the signal word (``hyperintense`` / ``hypointense``),
the first size in mm, and the location word before the vertebral level (``anterosuperior`` ... ``central``). The
lesion is measured by :func:`bundle.metrics.lesion_measure.measure_lesion`; :func:`adherence` compares the two:
the direction is right when the lesion's sign is the text's (no lesion found is wrong), the size when it is within
+-:data:`SIZE_TOLERANCE` of the text's, the location when the measured word is the text's. :func:`summarise` gives
the shares per requested signal. :class:`TextAdherence` is the stage-2 validation's ignite metric on 2-D slices.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ignite.metrics import Metric

from bundle.metrics.lesion_measure import LesionMeasure, marrow_region, measure_lesion, vertebral_body
from bundle.utils.lesion_text import lesion_size_mm

SIGNAL_WORDS = ("hyperintense", "hypointense")
SIZE_TOLERANCE = 0.3
DIRECTIONS = {"hyperintense": 1, "hypointense": -1}

# location word -> (anterior-posterior, superior-inferior) words of the lesion measure
LOCATION_WORDS = {
    "anterosuperior": ("anterior", "superior"),
    "anteroinferior": ("anterior", "inferior"),
    "posterosuperior": ("posterior", "superior"),
    "posteroinferior": ("posterior", "inferior"),
    "anterior": ("anterior", "mid"),
    "posterior": ("posterior", "mid"),
    "superior": ("central", "superior"),
    "inferior": ("central", "inferior"),
    "central": ("central", "mid"),
}
_LOCATION = re.compile(
    rf"\b({'|'.join(LOCATION_WORDS)})\s+(?:(?:portion|part|aspect) of the\s+)?[CTLS]\d{{1,2}}\b", re.IGNORECASE
)


def requested_signal(text: str) -> str:
    """``"hyperintense"``, ``"hypointense"`` or ``"unspecified"``: the lesion signal a text asks for."""
    found = [word for word in SIGNAL_WORDS if re.search(rf"\b{word}\b", text, flags=re.IGNORECASE)]
    return found[0] if len(found) == 1 else "unspecified"


@dataclass(frozen=True)
class RequestedFacts:
    """What a text asks for; None where it does not say."""

    signal: str
    size_mm: float | None
    position_ap: str | None
    position_si: str | None


def requested_facts(text: str) -> RequestedFacts:
    """The signal, size and location a lesion text asks for, e.g. "a 13 mm hyperintense lesion in the inferior L4
    vertebral body" -> ``("hyperintense", 13.0, "central", "inferior")``."""
    location = _LOCATION.search(text)
    ap, si = LOCATION_WORDS[location.group(1).lower()] if location else (None, None)
    return RequestedFacts(requested_signal(text), lesion_size_mm(text), ap, si)


def adherence(measure: LesionMeasure, facts: RequestedFacts, size_tolerance: float = SIZE_TOLERANCE) -> dict:
    """Per request: ``direction_ok``, ``size_ok`` (within +-``size_tolerance`` of the text's size), ``size_ratio``
    (measured / text), ``ap_ok``, ``si_ok``; a fact the text does not give is None."""
    found = measure.direction != 0
    want = DIRECTIONS.get(facts.signal)
    ratio = measure.size_mm / facts.size_mm if found and facts.size_mm else None
    return {
        "direction_ok": None if want is None else measure.direction == want,
        "size_ok": None if facts.size_mm is None else bool(ratio is not None and abs(ratio - 1) <= size_tolerance),
        "size_ratio": ratio,
        "ap_ok": None if facts.position_ap is None else measure.position_ap == facts.position_ap,
        "si_ok": None if facts.position_si is None else measure.position_si == facts.position_si,
    }


def _share(values: Sequence[bool | None]) -> float | None:
    defined = [bool(v) for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def summarise(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Per requested signal (rows ``{"signal", "adherence": adherence(...)}``): the count and the share of
    requests with the right direction, size within tolerance, right AP and SI words, and the median size ratio."""
    summary = {}
    for signal in sorted({row["signal"] for row in rows}):
        group = [row["adherence"] for row in rows if row["signal"] == signal]
        ratios = [a["size_ratio"] for a in group if a["size_ratio"] is not None]
        summary[signal] = {
            "count": len(group),
            **{key: _share([a[key] for a in group]) for key in ("direction_ok", "size_ok", "ap_ok", "si_ok")},
            "median_size_ratio": float(np.median(ratios)) if ratios else None,
        }
    return summary


def slice_to_canonical(image: torch.Tensor) -> np.ndarray:
    """A ``(1, H, W)`` model-grid slice cut in ``RIP`` (rows inferior, columns posterior) as ``(1, A, S)``."""
    return image.detach().cpu().double().numpy()[0, ::-1, ::-1].T[None].copy()


def slice_adherence(image: torch.Tensor, soft_mask: torch.Tensor, text: str, spacing=(1.0, 1.0)) -> dict:
    """Text adherence of the lesion in one 2-D model-grid slice ``(1, H, W)`` (``RIP``), measured against a
    lesion-free reference: the slice's own marrow level (the median in the vertebral body's marrow), since a
    validation slice has no normal twin. ``soft_mask > 0.5`` is the vertebra; ``spacing`` the (row, column) pixel
    size, mm."""
    after = slice_to_canonical(image)
    vertebra = slice_to_canonical(soft_mask) > 0.5
    if not vertebra.any():
        raise ValueError("the soft mask has no pixel above 0.5; no lesion can be measured")
    plane_spacing = np.array([1.0, spacing[1], spacing[0]])
    level = np.median(after[marrow_region(vertebral_body(vertebra, plane_spacing), plane_spacing)])
    measure = measure_lesion(np.where(vertebra, level, 0.0), after, vertebra, plane_spacing)
    facts = requested_facts(text)
    return {"signal": facts.signal, "measure": measure.to_json(), "adherence": adherence(measure, facts)}


class TextAdherence(Metric):
    """Stage-2 validation: the share of validation slices whose lesion follows the text, as an ignite metric.

    ``update`` takes ``(pred, mask, text)`` or ``(pred, mask, text, pixel_mm)`` batches (the outputs of
    :class:`bundle.engines.synthesis_evaluator.SynthesisEvaluator`; ``pixel_mm`` ``(B, 2)`` row and column pixel
    sizes, 1 mm when absent); each slice is measured by :func:`slice_adherence`. ``compute`` gives one statistic,
    ``statistic`` in ``direction_ok`` / ``size_ok`` / ``ap_ok`` / ``si_ok``, over slices whose text asks for
    ``signal`` (``hyperintense``, ``hypointense``, or None for both). Slices whose text asks for neither are not
    counted; an epoch without such slices gives NaN (no measure), not an error.
    """

    def __init__(
        self,
        statistic: str = "direction_ok",
        signal: str | None = None,
        output_transform=lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        if statistic not in ("direction_ok", "size_ok", "ap_ok", "si_ok"):
            raise ValueError(f"statistic must be direction_ok, size_ok, ap_ok or si_ok, got {statistic!r}")
        if signal is not None and signal not in SIGNAL_WORDS:
            raise ValueError(f"signal must be one of {SIGNAL_WORDS} or None, got {signal!r}")
        self.statistic, self.signal = statistic, signal
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self.rows: list[dict] = []

    def update(self, output) -> None:
        images, masks, texts, *rest = output
        pixel_mm = rest[0] if rest and rest[0] is not None else torch.ones(len(images), 2)
        for image, mask, text, spacing in zip(images, masks, texts, pixel_mm, strict=True):
            signal = requested_signal(text)
            if signal in SIGNAL_WORDS and (self.signal is None or signal == self.signal):
                self.rows.append(slice_adherence(image, mask, text, tuple(float(v) for v in spacing)))

    def compute(self) -> float:
        share = _share([row["adherence"][self.statistic] for row in self.rows])
        return float("nan") if share is None else share
