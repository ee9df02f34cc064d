"""Check the local pretrained folders of the ``sd15`` profile and of VG-MedGen's full profile before training or
sampling with them.

    python scripts/check_weights.py --sd15 pretrained/stable-diffusion-v1-5 --biomedclip pretrained/biomedclip
    python scripts/check_weights.py --biomedclip pretrained/biomedclip --biomedbert pretrained/biomedbert --convert
    python scripts/check_weights.py --pixart pretrained/PixArt-XL-2-512x512 --clinical_bert pretrained/Bio_ClinicalBERT
    python scripts/check_weights.py --sd15 DIR --nohashes          # skip the SHA-256 of the multi-GB files

Prints one line per check (OK / MISSING / NOT ACCEPTED / UNREADABLE / WRONG SHAPE / UNKNOWN HASH / NOTE) and
exits 0 when the folders are usable, 1 with the missing files and other problems named when they are not.
``--convert`` first rewrites refused pickles (``*.bin``) as safetensors. ``--profile structure`` checks the
layout and the configs' internal consistency but not the published sizes (by default each folder is checked against
its own model's: SD 1.5 / BiomedCLIP, PixArt-alpha 512 / Bio_ClinicalBERT).
See docs/pretrained_weights.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire

from bundle.utils.hashing import sha256_file
from bundle.weights.checker import NOT_ACCEPTED, PROFILES, check_weights, load_known_hashes
from bundle.weights.conversion import convert_to_safetensors, pickles_to_convert
from bundle.weights.layouts import PIXART_HOW, SD15_HOW


def _progress(path: Path, done: int, total: int) -> None:
    """Hashing progress on stderr, one line per file, updated about every 5 %."""
    step = max(total // 20, 1)
    if done == total or done // step != (done - (8 << 20)) // step:
        end = "\n" if done == total else "\r"
        print(
            f"  sha256 {path.name}: {100 * done // max(total, 1):3d}% of {total / 1e9:.2f} GB",
            end=end,
            file=sys.stderr,
            flush=True,
        )


def main(
    sd15: str | None = None,
    biomedclip: str | None = None,
    biomedbert: str | None = None,
    profile: str | None = None,
    hashes: bool = True,
    convert: bool = False,
    latent: bool = True,
    pixart: str | None = None,
    clinical_bert: str | None = None,
) -> None:
    """Check ``--sd15`` (Stable Diffusion 1.5, diffusers layout) and/or ``--biomedclip`` (open_clip local-dir;
    ``--biomedbert``: its text model's config/tokenizer folder, default ``biomedbert/`` beside it), and VG-MedGen's
    ``--pixart`` (PixArt-alpha, diffusers layout: transformer/, vae/, scheduler/; T5 not needed) and
    ``--clinical_bert`` (Bio_ClinicalBERT: config.json, model.safetensors, vocab.txt).

    Args:
        profile: none (each folder against its own model's published sizes), ``sd15``, ``sd15_inpaint`` (SD 1.5
            inpainting: a 9-input UNet, for MedDiff-FT), ``pixart_alpha``, ``structure`` or ``structure_inpaint``
            (layout and consistency only).
        hashes: SHA-256 of each weight file against bundle/weights/known_weight_hashes.json (``--nohashes`` skips it).
        convert: rewrite refused pickled weights as safetensors first (``torch.load(weights_only=True)``).
        latent: the VAE is needed (``--nolatent`` for a pixel-space UNet).
    """
    if sd15 is None and biomedclip is None and pixart is None and clinical_bert is None:
        raise SystemExit("nothing to check: give --sd15 DIR, --biomedclip DIR, --pixart DIR and/or --clinical_bert DIR")
    if profile is not None and profile not in PROFILES:
        raise SystemExit(f"--profile must be one of {sorted(PROFILES)}, got {profile!r}")
    if convert:
        for source, target in pickles_to_convert(sd15, biomedclip, pixart, clinical_bert):
            print(f"converting {source} -> {target}", file=sys.stderr, flush=True)
            sha = sha256_file(source, progress=lambda done, total, s=source: _progress(s, done, total))
            convert_to_safetensors(source, target, source_sha256=sha)
    known = load_known_hashes() if hashes else {}
    report = check_weights(
        sd15, biomedclip, biomedbert, profile, hashes, known, _progress, latent, pixart, clinical_bert
    )
    for line in report.lines():
        print(line)
    if not report.usable:
        hints = []
        if report.with_status(NOT_ACCEPTED):
            hints.append("pickled weights: run again with --convert")
        if sd15 is not None and any(str(f.path).startswith(str(Path(sd15))) for f in report.with_status("MISSING")):
            hints.append("Stable Diffusion 1.5: " + SD15_HOW)
        if pixart is not None and any(str(f.path).startswith(str(Path(pixart))) for f in report.with_status("MISSING")):
            hints.append("PixArt-alpha: " + PIXART_HOW)
        hints.append("see docs/pretrained_weights.md")
        raise SystemExit(report.summary() + "\n" + "\n".join(hints))
    print(report.summary())


if __name__ == "__main__":
    fire.Fire(main)
