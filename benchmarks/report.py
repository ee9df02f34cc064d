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


def write_json(path: Path, records: Sequence[Record], machine: Mapping, settings: Mapping) -> None:
    """``results.json``: the list of records (the interface the checks read); machine and settings beside it."""
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


def met_text(record: Record) -> str:
    if record.met is None:
        return (
            "n/a" if record.notes.startswith("not measured") or record.ours_s is None and record.value is None else "-"
        )
    return "yes" if record.met else "**no**"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(records: Sequence[Record]) -> list[str]:
    lines = ["| figure | ours | reference | ratio | value | target | met |", "|---|---|---|---|---|---|---|"]
    for r in records:
        value = f"{number(r.value, 4)} {r.unit}" if r.value is not None else "-"
        lines.append(
            f"| {cell(r.name)} | {seconds(r.ours_s)} | {seconds(r.reference_s)} | "
            f"{number(r.ratio)} | {cell(value)} | {cell(r.target)} | {met_text(r)} |"
        )
    lines.append("")
    for r in records:
        details = [
            f"*shape*: {r.shape}" if r.shape else "",
            f"*reference*: {r.reference}",
            f"*notes*: {r.notes}" if r.notes else "",
            f"*repeats*: {r.repeats} (median)" if r.repeats else "",
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
    lines = ["# Performance", "", preamble, "", "## Machine and settings", "", "| | |", "|---|---|"]
    for key, value in {**machine, **settings}.items():
        lines.append(f"| {key} | {cell(value)} |")
    lines += ["", "## Summary", "", "| item | figure | ratio | target | met |", "|---|---|---|---|---|"]
    for r in records:
        if r.met is not None or r.target.startswith(("<", "faster", "throughput")):
            lines.append(f"| {r.item} | {cell(r.name)} | {number(r.ratio)} | {cell(r.target)} | {met_text(r)} |")
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
