"""``results.json`` and the Markdown report ``docs/performance.md``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.common import Record

ITEMS = {
    1: "Guided UNet overhead (the MSC attention)",
    2: "Sampler vs diffusers' own loop",
    3: "Fewer steps at equal quality (DPM-Solver++)",
    4: "Soft-mask blur on 3-D volumes",
    5: "Training throughput and data wait",
    6: "Memory",
    7: "Scale out: DDP with torchrun",
    8: "Volumes per hour (end to end) and the SD-1.5 GPU figures",
}


def require_spread(records: Sequence[Record]) -> None:
    """Refuse a row that gives a measured time without the spread of its rounds (``[min, median, max]``, in
    order, bracketing the time) or without how it was measured."""
    for r in records:
        for label, time, values in (
            ("ours_s", r.ours_s, r.ours_spread_s),
            ("reference_s", r.reference_s, r.reference_spread_s),
        ):
            if time is None:
                continue
            if values is None or len(values) != 3 or not values[0] <= values[1] <= values[2]:
                raise ValueError(f"benchmark row {r.name!r}: {label} = {time} without its spread [min, median, max]")
            if not values[0] - 1e-12 <= time <= values[2] + 1e-12:
                raise ValueError(f"benchmark row {r.name!r}: {label} = {time} lies outside its spread {values}")
        if (r.ours_s is not None or r.reference_s is not None) and not (r.repeats and r.measured):
            raise ValueError(
                f"benchmark row {r.name!r}: a timed row needs its number of rounds and how it was measured"
            )


def write_json(path: Path, records: Sequence[Record], machine: Mapping, settings: Mapping) -> None:
    """``results.json``: the list of records (the interface the checks read); machine and settings beside it."""
    require_spread(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.as_dict() for r in records], indent=2, default=str))
    path.with_name("machine.json").write_text(
        json.dumps({"machine": machine, "settings": settings}, indent=2, default=str)
    )


def seconds(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.0f} us"


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def with_spread(value: float | None, values: Sequence[float] | None, show) -> str:
    """``median [min - max]`` of a row's rounds (only the value where there is a single round)."""
    if value is None:
        return "-"
    if values is None or values[0] == values[2]:
        return show(value)
    return f"{show(value)} [{show(values[0])} - {show(values[2])}]"


def met_text(record: Record) -> str:
    if record.met is None:
        return (
            "n/a" if record.notes.startswith("not measured") or record.ours_s is None and record.value is None else "-"
        )
    return "yes" if record.met else "**no**"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(records: Sequence[Record]) -> list[str]:
    lines = [
        "| figure | ours: median [min - max] | reference: median [min - max] | ratio: median [min - max] "
        "| value | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        value = f"{number(r.value, 4)} {r.unit}" if r.value is not None else "-"
        lines.append(
            f"| {cell(r.name)} | {with_spread(r.ours_s, r.ours_spread_s, seconds)} | "
            f"{with_spread(r.reference_s, r.reference_spread_s, seconds)} | "
            f"{with_spread(r.ratio, r.ratio_spread, number)} | {cell(value)} | {cell(r.target)} | {met_text(r)} |"
        )
    lines.append("")
    for r in records:
        details = [
            f"*shape*: {r.shape}" if r.shape else "",
            f"*reference*: {r.reference}",
            f"*notes*: {r.notes}" if r.notes else "",
            f"*measured*: {r.measured}, {r.repeats} round(s)" if r.repeats else "",
        ]
        lines.append(f"- **{cell(r.name)}** - " + "; ".join(d for d in details if d))
    lines.append("")
    return lines


def markdown(
    records: Sequence[Record],
    machine: Mapping,
    settings: Mapping,
    narrative: Mapping[int, str],
    preamble: str,
    closing: str,
) -> str:
    require_spread(records)
    lines = ["# Performance", "", preamble, "", "## Machine and settings", "", "| | |", "|---|---|"]
    for key, value in {**machine, **settings}.items():
        lines.append(f"| {key} | {cell(value)} |")
    lines += [
        "",
        "## Summary",
        "",
        "| item | figure | ratio: median [min - max] | target | met |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        if r.met is not None or r.target.startswith(("<", "faster", "throughput")):
            lines.append(
                f"| {r.item} | {cell(r.name)} | {with_spread(r.ratio, r.ratio_spread, number)} | {cell(r.target)} "
                f"| {met_text(r)} |"
            )
    lines.append("")
    for item, title in ITEMS.items():
        rows = [r for r in records if r.item == item]
        if not rows and item not in narrative:
            continue
        lines += [f"## {item}. {title}", ""]
        if item in narrative:
            lines += [narrative[item], ""]
        lines += table(rows)
    lines += [closing, ""]
    return "\n".join(lines)
