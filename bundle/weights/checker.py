"""A checker for the pretrained folders of the ``sd15`` profile and of VG-MedGen's full profile
(``scripts/check_weights.py``).

It checks the file lists of :mod:`bundle.weights.layouts`, which the loaders read too, and goes further than the
loaders' first-missing-file errors: it names *every* missing file, refuses pickled weights (``.bin`` / ``.ckpt``
/ ``.pt``: unpickling can run code, and their tensor shapes cannot be read without unpickling), and checks sizes
without loading a tensor: config values against a :class:`WeightProfile` (the published SD 1.5 / BiomedCLIP
figures, or :data:`STRUCTURE` for any sizes), and tensor shapes from the safetensors headers against what the
configs imply (for PixArt, e.g., the patch embedding of ``in_channels`` and ``patch_size``, the caption
projection of ``caption_channels``, latent channels the VAE's). Optionally it hashes each weight file (SHA-256,
streamed) and compares with the published hashes listed in ``bundle/weights/known_weight_hashes.json``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bundle.errors import InputError
from bundle.utils.files import read_json_object
from bundle.utils.hashing import sha256_file
from bundle.weights.layouts import (
    BIOMEDBERT_REPO,
    BIOMEDCLIP_REPO,
    CLINICAL_BERT_HOW,
    CLINICAL_BERT_PART,
    DEFAULT_BIOMEDBERT,
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHT_NAMES,
    OPEN_CLIP_WEIGHTS,
    PIXART_HOW,
    PIXART_PARTS,
    SD15_PARTS,
    TEXT_MODEL_CONFIG,
    TEXT_MODEL_OPTIONAL,
    TEXT_MODEL_VOCABS,
    FolderPart,
    is_pickle_name,
    open_clip_weights,
    pixart_files,
    sd15_files,
)

# ------------------------------------------------------------------ report words
OK = "OK"
MISSING = "MISSING"
NOT_ACCEPTED = "NOT ACCEPTED"
UNREADABLE = "UNREADABLE"
WRONG_SHAPE = "WRONG SHAPE"
UNKNOWN_HASH = "UNKNOWN HASH"
NOTE = "NOTE"
FAILURES = frozenset({MISSING, NOT_ACCEPTED, UNREADABLE, WRONG_SHAPE})


def convert_hint(pickle_path: Path, target: Path) -> str:
    return (
        f"pickled weights are not accepted (unpickling can run code, and their shapes cannot be checked "
        f"without unpickling); convert once with `python scripts/check_weights.py ... --convert`, which reads "
        f"{pickle_path.name} with torch.load(weights_only=True) and writes {target.name}"
    )


# ------------------------------------------------------------------ profiles
@dataclass(frozen=True)
class WeightProfile:
    """Expected figures: ``values[part][dotted.config.key]`` and ``shapes[part][tensor name]``.

    Parts: ``unet``, ``vae``, ``text_encoder`` (SD 1.5), ``biomedclip`` (keys inside ``model_cfg`` of
    open_clip_config.json), ``biomedbert`` (its config.json); ``transformer``, ``vae`` (PixArt-alpha),
    ``clinical_bert`` (Bio_ClinicalBERT's config.json and weights). The checks derived from the configs themselves
    (e.g. ``conv_in.weight`` is ``(block_out_channels[0], in_channels, 3, 3)``) run whatever the profile.
    """

    name: str
    values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    shapes: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)
    inpainting: bool = False  # the UNet sees [noisy latents, mask, masked-image latents]: 2 x latent + 1 inputs


SD15 = WeightProfile(
    "sd15",
    values={
        "unet": {
            "in_channels": 4,
            "out_channels": 4,
            "cross_attention_dim": 768,
            "block_out_channels": [320, 640, 1280, 1280],
            "sample_size": 64,
        },
        "vae": {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512]},
        "text_encoder": {"hidden_size": 768, "vocab_size": 49408, "max_position_embeddings": 77},
        "biomedclip": {
            "embed_dim": 512,
            "vision_cfg.timm_model_name": "vit_base_patch16_224",
            "vision_cfg.image_size": 224,
            "text_cfg.hf_proj_type": "mlp",
            "text_cfg.context_length": 256,
        },
        "biomedbert": {"model_type": "bert", "hidden_size": 768, "vocab_size": 30522},
    },
    shapes={
        "unet": {
            "conv_in.weight": (320, 4, 3, 3),
            "conv_out.weight": (4, 320, 3, 3),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, 768),
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
        },
        "vae": {
            "encoder.conv_in.weight": (128, 3, 3, 3),
            "decoder.conv_in.weight": (512, 4, 3, 3),
            "quant_conv.weight": (8, 8, 1, 1),
            "post_quant_conv.weight": (4, 4, 1, 1),
        },
        "text_encoder": {
            "text_model.embeddings.token_embedding.weight": (49408, 768),
            "text_model.embeddings.position_embedding.weight": (77, 768),
        },
        "biomedclip": {
            "visual.trunk.patch_embed.proj.weight": (768, 3, 16, 16),
            "visual.trunk.pos_embed": (1, 197, 768),
            "visual.head.proj.weight": (512, 768),
            "text.transformer.embeddings.word_embeddings.weight": (30522, 768),
            "text.transformer.embeddings.position_embeddings.weight": (512, 768),
            "text.proj.0.weight": (640, 768),
            "text.proj.2.weight": (512, 640),
        },
    },
)
# SD 1.5 inpainting (stable-diffusion-v1-5/stable-diffusion-inpainting, MedDiff-FT's base): SD 1.5's layout and sizes,
# its UNet with 9 input channels (4 noisy latents + 1 mask + 4 masked-image latents)
SD15_INPAINT = WeightProfile(
    "sd15_inpaint",
    values={**SD15.values, "unet": {**SD15.values["unet"], "in_channels": 9}},
    shapes={**SD15.shapes, "unet": {**SD15.shapes["unet"], "conv_in.weight": (320, 9, 3, 3)}},
    inpainting=True,
)
# VG-MedGen's full profile: PixArt-XL-2-512x512 (its transformer/config.json; the VAE is SD's, sd-vae-ft-ema) and
# emilyalsentzer/Bio_ClinicalBERT (BERT-base cased: 28996 words)
PIXART_ALPHA = WeightProfile(
    "pixart_alpha",
    values={
        "transformer": {
            "in_channels": 4,
            "out_channels": 8,
            "num_layers": 28,
            "num_attention_heads": 16,
            "attention_head_dim": 72,
            "caption_channels": 4096,
            "sample_size": 64,
            "patch_size": 2,
        },
        "vae": SD15.values["vae"],
        "clinical_bert": {
            "model_type": "bert",
            "hidden_size": 768,
            "vocab_size": 28996,
            "max_position_embeddings": 512,
        },
    },
    shapes={
        "transformer": {
            "pos_embed.proj.weight": (1152, 4, 2, 2),
            "caption_projection.linear_1.weight": (1152, 4096),
            "proj_out.weight": (32, 1152),
        },
        "vae": SD15.shapes["vae"],
        "clinical_bert": {"embeddings.word_embeddings.weight": (28996, 768)},
    },
)
STRUCTURE = WeightProfile("structure")
STRUCTURE_INPAINT = WeightProfile("structure_inpaint", inpainting=True)
PROFILES = {profile.name: profile for profile in (SD15, SD15_INPAINT, PIXART_ALPHA, STRUCTURE, STRUCTURE_INPAINT)}

# ------------------------------------------------------------------ known hashes
KNOWN_HASHES_FILE = Path(__file__).with_name("known_weight_hashes.json")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def load_known_hashes(path: str | os.PathLike = KNOWN_HASHES_FILE) -> dict[str, dict]:
    """``sha256 -> entry`` from the known-hash list (entries: model, file, sha256, status, sources)."""
    path = Path(path)
    document = read_json_object(path, "the known-hash list", expected=' such as {"files": [...]}')
    known: dict[str, dict] = {}
    for i, entry in enumerate(document.get("files", [])):
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise InputError(path, f"files[{i}]: 'sha256' must be 64 lower-case hex digits, got {sha!r}")
        if not entry.get("file") or not entry.get("sources"):
            raise InputError(path, f"files[{i}]: every entry names its 'file' and its 'sources'")
        if sha in known:
            raise InputError(path, f"files[{i}]: {sha} is listed twice")
        known[sha] = entry
    return known


# ------------------------------------------------------------------ findings
@dataclass(frozen=True)
class Finding:
    """One line of the report: a status word, the file (or folder) it is about, and what was found."""

    status: str
    path: Path
    message: str

    def line(self) -> str:
        return f"{self.status:<12}  {self.path}: {self.message}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.failures()

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status in FAILURES]

    def with_status(self, status: str) -> list[Finding]:
        return [f for f in self.findings if f.status == status]

    def lines(self) -> list[str]:
        return [f.line() for f in self.findings]

    def summary(self) -> str:
        warnings = self.with_status(UNKNOWN_HASH)
        if self.usable:
            note = f"; {len(warnings)} hash(es) not in the known list (see above)" if warnings else ""
            return f"usable: every check passed{note}"
        parts = [f"NOT USABLE: {len(self.failures())} problem(s)"]
        for status, title in (
            (MISSING, "missing"),
            (NOT_ACCEPTED, "not accepted (pickled weights)"),
            (WRONG_SHAPE, "wrong shape"),
            (UNREADABLE, "unreadable"),
        ):
            found = self.with_status(status)
            if found:
                parts.append(f"{title}:")
                parts.extend(
                    f"  {f.path}"
                    + ("" if status == MISSING and "folder not found" not in f.message else f": {f.message}")
                    for f in found
                )
        return "\n".join(parts)


class _Findings(list):
    def add(self, status: str, path: Path, message: str) -> None:
        self.append(Finding(status, Path(path), message))


_ABSENT = object()


def _dotted(config: Mapping[str, Any], key: str) -> Any:
    value: Any = config
    for name in key.split("."):
        if not isinstance(value, Mapping) or name not in value:
            return _ABSENT
        value = value[name]
    return value


def _read_json(findings: _Findings, path: Path, what: str) -> dict | None:
    try:
        return read_json_object(path, what)
    except InputError as error:
        findings.add(UNREADABLE, path, error.problem)
        return None


def _sniff_pickle(path: Path) -> bool:
    """A torch file (zip archive) or a raw pickle (protocol 2-5), whatever its name; a safetensors file (even a
    truncated one) has its JSON header starting at byte 8."""
    with open(path, "rb") as stream:
        head = stream.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        return False
    return head.startswith(b"PK\x03\x04") or (len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _read_header(findings: _Findings, path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]] | None:
    """Tensor shapes and metadata of a safetensors file, from its header only (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            names = handle.keys()  # a safe_open handle is not iterable
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in names}
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        if _sniff_pickle(path):
            findings.add(
                NOT_ACCEPTED,
                path,
                "a pickled torch file with a .safetensors name: rename it to .bin, "
                "then convert it with --convert (pickles are not accepted)",
            )
        else:
            findings.add(UNREADABLE, path, f"not a complete safetensors file ({error}); download it again")
        return None
    if not shapes:
        findings.add(UNREADABLE, path, "a safetensors file without tensors")
        return None
    return shapes, metadata


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ints(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_int(v) for v in value)


class _Tensors:
    """Shape checks against one safetensors header; names may carry one of ``prefixes`` in the file (SD 1.5's
    text encoder was saved as ``text_model.*``, transformers 5 saves the same model without the prefix)."""

    def __init__(
        self, findings: _Findings, path: Path, shapes: Mapping[str, tuple[int, ...]], prefixes: tuple[str, ...] = ("",)
    ):
        self.findings, self.path, self.shapes, self.prefixes = findings, path, shapes, prefixes

    def get(self, name: str) -> tuple[int, ...] | None:
        bare = next((name[len(p) :] for p in self.prefixes if p and name.startswith(p)), name)
        for prefix in self.prefixes:
            if prefix + bare in self.shapes:
                return self.shapes[prefix + bare]
        return None

    def expect(self, name: str, expected: tuple[int, ...], why: str) -> None:
        actual = self.get(name)
        if actual is None:
            self.findings.add(WRONG_SHAPE, self.path, f"no tensor {name} ({why})")
        elif tuple(actual) != tuple(expected):
            self.findings.add(WRONG_SHAPE, self.path, f"{name} is {tuple(actual)}, expected {tuple(expected)} ({why})")
        else:
            self.findings.add(OK, self.path, f"{name} {tuple(actual)} ({why})")

    def pins(self, profile: WeightProfile, part: str) -> None:
        for name, shape in profile.shapes.get(part, {}).items():
            self.expect(name, shape, f"{profile.name} profile")


def _check_values(
    findings: _Findings, path: Path, config: Mapping[str, Any], profile: WeightProfile, part: str
) -> None:
    for key, expected in profile.values.get(part, {}).items():
        actual = _dotted(config, key)
        if actual is _ABSENT:
            findings.add(WRONG_SHAPE, path, f"no {key}; the {profile.name} profile expects {expected!r}")
        elif actual != expected:
            findings.add(WRONG_SHAPE, path, f"{key} is {actual!r}, the {profile.name} profile expects {expected!r}")
        else:
            findings.add(OK, path, f"{key} = {actual!r} ({profile.name} profile)")


def _need(
    findings: _Findings,
    path: Path,
    config: Mapping[str, Any],
    checks: Mapping[str, Callable[[Any], bool]],
) -> bool:
    """Whether ``config`` has each key with a usable value; reports the ones it lacks."""
    good = True
    for key, test in checks.items():
        value = _dotted(config, key)
        if value is _ABSENT or not test(value):
            shown = "missing" if value is _ABSENT else repr(value)
            findings.add(WRONG_SHAPE, path, f"{key} is {shown}; cannot check the weights against it")
            good = False
    return good


# ------------------------------------------------------------------ hashing
def _check_hash(
    findings: _Findings,
    path: Path,
    known: Mapping[str, dict],
    expected_file: str,
    progress: Callable[[Path, int, int], None] | None,
    metadata: Mapping[str, str] | None = None,
) -> str:
    sha = sha256_file(path, progress=None if progress is None else lambda done, total: progress(path, done, total))
    entry = known.get(sha)
    if entry is not None:
        where = (
            entry["file"] if entry["file"] == expected_file else f"{entry['file']} (checked here as {expected_file})"
        )
        status = entry.get("status", "published")
        findings.add(
            OK if status == "published" else NOTE,
            path,
            f"sha256 {sha} = {status} {entry.get('model', '')}/{where}; source: {entry['sources'][0]}",
        )
        return sha
    message = (
        f"sha256 {sha} is not in bundle/weights/known_weight_hashes.json (another conversion or revision, a "
        "fine-tune, or a damaged download; see docs/pretrained_weights.md)"
    )
    source = (metadata or {}).get("source_sha256")
    if source:
        origin = known.get(source)
        told = (
            f"the published {origin.get('model', '')}/{origin['file']}"
            if origin
            else "a file that is not in the known list either"
        )
        message += (
            f"; its metadata says it was converted from {metadata.get('converted_from', '?')} with sha256 "
            f"{source} = {told} (recorded by --convert, not re-verified)"
        )
    findings.add(UNKNOWN_HASH, path, message)
    return sha


# ------------------------------------------------------------------ SD 1.5
def check_sd15(
    folder: str | os.PathLike,
    profile: WeightProfile = SD15,
    hashes: bool = True,
    known: Mapping[str, dict] | None = None,
    progress: Callable[[Path, int, int], None] | None = None,
    latent: bool = True,
) -> list[Finding]:
    """Check a Stable Diffusion 1.5 folder in diffusers layout; every problem is reported, none raised."""
    folder = Path(folder)
    findings = _Findings()
    known = load_known_hashes() if known is None and hashes else (known or {})
    if not folder.is_dir():
        findings.add(MISSING, folder, f"folder not found; it should hold {', '.join(sd15_files(latent))}")
        return list(findings)
    parts = [part for part in SD15_PARTS if latent or not part.latent_only]
    _check_part_files(findings, folder, parts)
    configs = _read_configs(findings, folder, [entry for entry in SD15_CONFIGS if latent or entry[0] != "vae"])
    headers = _read_part_headers(findings, folder, parts)

    unet, vae, text = configs.get("unet"), configs.get("vae"), configs.get("text_encoder")
    for part, config in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        if config is not None:
            _check_values(findings, folder / f"{part}/config.json", config, profile, part)
    _check_unet(findings, folder, unet, headers.get("unet"), profile)
    if latent:
        _check_vae(findings, folder, vae, headers.get("vae"), profile)
    _check_text_encoder(findings, folder, text, headers.get("text_encoder"), configs.get("tokenizer"), profile)
    _check_sd15_agreement(findings, folder, unet, vae if latent else None, text, latent, profile.inpainting)

    _check_part_hashes(findings, folder, parts, headers, known, progress, hashes)
    return list(findings)


def _check_part_files(findings: _Findings, folder: Path, parts: list[FolderPart]) -> None:
    """Every required file present; pickled weights refused unless the safetensors file is there too."""
    for part in parts:
        for name in part.files:
            if (folder / name).is_file():
                findings.add(OK, folder / name, "present")
            else:
                findings.add(MISSING, folder / name, f"required by the {part.name}")
        for name in part.pickles:
            if not (folder / name).is_file():
                continue
            if part.weights and (folder / part.weights).is_file():
                findings.add(NOTE, folder / name, f"ignored: the loader reads {part.weights}")
            else:
                findings.add(NOT_ACCEPTED, folder / name, convert_hint(folder / name, folder / part.weights))


SD15_CONFIGS = (
    ("unet", "unet/config.json", "a UNet config"),
    ("vae", "vae/config.json", "a VAE config"),
    ("text_encoder", "text_encoder/config.json", "a CLIP text config"),
    ("scheduler", "scheduler/scheduler_config.json", "a scheduler config"),
    ("tokenizer", "tokenizer/tokenizer_config.json", "a tokenizer config"),
)
PIXART_CONFIGS = (
    ("transformer", "transformer/config.json", "a PixArt transformer config"),
    ("vae", "vae/config.json", "a VAE config"),
    ("scheduler", "scheduler/scheduler_config.json", "a scheduler config"),
)


def _read_configs(
    findings: _Findings, folder: Path, entries: list[tuple[str, str, str]] | tuple[tuple[str, str, str], ...]
) -> dict[str, dict | None]:
    """A diffusers folder's config files that exist, by part (``entries``: part, file, what it should be); a
    scheduler config must name its class."""
    configs: dict[str, dict | None] = {}
    for part, name, what in entries:
        if (folder / name).is_file():
            configs[part] = _read_json(findings, folder / name, what)
    scheduler = configs.get("scheduler")
    if scheduler is not None and "_class_name" not in scheduler:
        findings.add(
            UNREADABLE, folder / "scheduler/scheduler_config.json", "no _class_name: not a diffusers scheduler config"
        )
    return configs


def _read_part_headers(findings: _Findings, folder: Path, parts) -> dict[str, tuple[dict, dict] | None]:
    """The safetensors header of each part's weight file that exists, by part."""
    return {
        part.name: _read_header(findings, folder / part.weights)
        for part in parts
        if part.weights and (folder / part.weights).is_file()
    }


def _check_part_hashes(
    findings: _Findings,
    folder: Path,
    parts: list[FolderPart],
    headers: Mapping[str, tuple | None],
    known: Mapping[str, dict],
    progress: Callable[[Path, int, int], None] | None,
    hashes: bool = True,
) -> None:
    """The hash of each weight file the loader would read (a pickle only where no safetensors file is there); without
    ``hashes``, a note that none was computed."""
    if not hashes:
        findings.add(NOTE, folder, "hashes not computed (--nohashes)")
        return
    for part in parts:
        if part.weights and headers.get(part.name) is not None:
            _check_hash(findings, folder / part.weights, known, part.weights, progress, headers[part.name][1])
        for name in part.pickles:
            if (folder / name).is_file() and not (part.weights and (folder / part.weights).is_file()):
                _check_hash(findings, folder / name, known, name, progress)


def _check_unet(
    findings: _Findings, folder: Path, config: dict | None, header: tuple | None, profile: WeightProfile
) -> None:
    path = folder / "unet/config.json"
    if header is None:
        return
    tensors = _Tensors(findings, folder / "unet/diffusion_pytorch_model.safetensors", header[0])
    tensors.pins(profile, "unet")
    if config is None:
        return
    if _need(findings, path, config, {"in_channels": _int, "out_channels": _int, "block_out_channels": _ints}):
        width = config["block_out_channels"][0]
        k_in, k_out = config.get("conv_in_kernel", 3), config.get("conv_out_kernel", 3)
        tensors.expect(
            "conv_in.weight",
            (width, config["in_channels"], k_in, k_in),
            "block_out_channels[0], in_channels, conv_in_kernel",
        )
        tensors.expect(
            "conv_out.weight",
            (config["out_channels"], width, k_out, k_out),
            "out_channels, block_out_channels[0], conv_out_kernel",
        )
    cross = config.get("cross_attention_dim")
    widths = set(cross) if isinstance(cross, list) else {cross}
    if not all(_int(w) for w in widths):
        findings.add(WRONG_SHAPE, path, f"cross_attention_dim is {cross!r}; cannot check the weights against it")
    else:
        keys = [name for name in header[0] if name.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]
        wrong = [f"{name} {header[0][name]}" for name in keys if header[0][name][-1] not in widths]
        if not keys:
            findings.add(
                WRONG_SHAPE, tensors.path, "no cross-attention weights (attn2.to_k / to_v): not a text-conditioned UNet"
            )
        elif wrong:
            findings.add(
                WRONG_SHAPE,
                tensors.path,
                f"{len(wrong)} of {len(keys)} cross-attention key/value weights "
                f"do not take {sorted(widths)}-wide text states "
                f"(cross_attention_dim), e.g. {wrong[0]}",
            )
        else:
            findings.add(
                OK,
                tensors.path,
                f"{len(keys)} cross-attention key/value weights take "
                f"{sorted(widths)}-wide text states (cross_attention_dim)",
            )


def _check_vae(
    findings: _Findings, folder: Path, config: dict | None, header: tuple | None, profile: WeightProfile
) -> None:
    if header is None:
        return
    tensors = _Tensors(findings, folder / "vae/diffusion_pytorch_model.safetensors", header[0])
    tensors.pins(profile, "vae")
    if config is None:
        return
    if _need(
        findings,
        folder / "vae/config.json",
        config,
        {"in_channels": _int, "out_channels": _int, "latent_channels": _int, "block_out_channels": _ints},
    ):
        widths, latent = config["block_out_channels"], config["latent_channels"]
        tensors.expect(
            "encoder.conv_in.weight", (widths[0], config["in_channels"], 3, 3), "block_out_channels[0], in_channels"
        )
        tensors.expect("decoder.conv_in.weight", (widths[-1], latent, 3, 3), "block_out_channels[-1], latent_channels")
        tensors.expect(
            "decoder.conv_out.weight", (config["out_channels"], widths[0], 3, 3), "out_channels, block_out_channels[0]"
        )
        if config.get("use_quant_conv", True):
            tensors.expect("quant_conv.weight", (2 * latent, 2 * latent, 1, 1), "2 x latent_channels")
        if config.get("use_post_quant_conv", True):
            tensors.expect("post_quant_conv.weight", (latent, latent, 1, 1), "latent_channels")


def _check_text_encoder(
    findings: _Findings,
    folder: Path,
    config: dict | None,
    header: tuple | None,
    tokenizer_config: dict | None,
    profile: WeightProfile,
) -> None:
    path = folder / "text_encoder/config.json"
    tensors = None
    if header is not None:
        tensors = _Tensors(findings, folder / "text_encoder/model.safetensors", header[0], ("text_model.", ""))
        tensors.pins(profile, "text_encoder")
    if config is None:
        return
    if not _need(findings, path, config, {"hidden_size": _int, "vocab_size": _int, "max_position_embeddings": _int}):
        return
    width, vocab, positions = config["hidden_size"], config["vocab_size"], config["max_position_embeddings"]
    if tensors is not None:
        tensors.expect("text_model.embeddings.token_embedding.weight", (vocab, width), "vocab_size, hidden_size")
        tensors.expect(
            "text_model.embeddings.position_embedding.weight",
            (positions, width),
            "max_position_embeddings, hidden_size",
        )
        tensors.expect("text_model.final_layer_norm.weight", (width,), "hidden_size")
    vocab_path = folder / "tokenizer/vocab.json"
    if vocab_path.is_file():
        tokens = _read_json(findings, vocab_path, "a BPE vocabulary")
        if tokens is not None:
            ids = [i for i in tokens.values() if _int(i)]
            if len(ids) != len(tokens) or not ids:
                findings.add(UNREADABLE, vocab_path, "not a token -> id map")
            elif max(ids) >= vocab:
                findings.add(
                    WRONG_SHAPE,
                    vocab_path,
                    f"token ids go up to {max(ids)}, the text encoder embeds vocab_size {vocab}",
                )
            else:
                findings.add(OK, vocab_path, f"{len(ids)} tokens, ids fit vocab_size {vocab}")
    merges = folder / "tokenizer/merges.txt"
    if merges.is_file():
        lines = [
            line
            for line in merges.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        if lines:
            findings.add(OK, merges, f"{len(lines)} BPE merges")
        else:
            findings.add(UNREADABLE, merges, "no BPE merges")
    length = (tokenizer_config or {}).get("model_max_length")
    if _int(length) and length > positions:
        findings.add(
            WRONG_SHAPE,
            folder / "tokenizer/tokenizer_config.json",
            f"model_max_length {length} is more than the text encoder's {positions} positions",
        )


def _check_sd15_agreement(
    findings: _Findings,
    folder: Path,
    unet: dict | None,
    vae: dict | None,
    text: dict | None,
    latent: bool = True,
    inpainting: bool = False,
) -> None:
    """The checks :func:`bundle.networks.medsoft_diffusion.sd15_model` makes across sub-folders, reported instead of
    raised. ``inpainting``: the UNet takes 2 x latent_channels + 1 inputs (noisy latents, mask, masked-image latents;
    :class:`bundle.networks.meddiffft_inpainting.InpaintingDiffusion`)."""
    path = folder / "unet/config.json"
    if unet is not None and text is not None:
        cross = unet.get("cross_attention_dim")
        cross = set(cross) if isinstance(cross, list) else {cross}
        if cross != {text.get("hidden_size")}:
            findings.add(
                WRONG_SHAPE,
                path,
                f"the UNet's cross_attention_dim {sorted(cross, key=str)} is not the text "
                f"encoder's hidden_size {text.get('hidden_size')}; unet/ and text_encoder/ "
                "must come from one model",
            )
        else:
            findings.add(OK, path, f"cross_attention_dim = text encoder hidden_size = {text.get('hidden_size')}")
    if unet is not None and vae is not None:
        channels = vae.get("latent_channels")
        inputs = 2 * channels + 1 if inpainting and _int(channels) else channels
        if unet.get("in_channels") != inputs or unet.get("out_channels") != channels:
            findings.add(
                WRONG_SHAPE,
                path,
                f"the UNet has {unet.get('in_channels')} input and "
                f"{unet.get('out_channels')} output channels; the VAE's latents have "
                f"{channels}"
                + (
                    f", so an inpainting UNet needs {inputs} inputs (noisy latents, mask, masked-image latents)"
                    if inpainting
                    else ""
                ),
            )
        else:
            what = f"in channels = 2 x {channels} + 1 (inpainting), out" if inpainting else "in/out"
            findings.add(OK, path, f"{what} channels = VAE latent_channels = {channels}")
    if unet is not None and not latent and (unet.get("in_channels"), unet.get("out_channels")) != (1, 1):
        findings.add(
            WRONG_SHAPE,
            path,
            f"the UNet has {unet.get('in_channels')} input and "
            f"{unet.get('out_channels')} output channels; pixel space (--nolatent) needs 1",
        )


# ------------------------------------------------------------------ BiomedCLIP + BiomedBERT
def check_biomedclip(
    folder: str | os.PathLike,
    text_model_dir: str | os.PathLike | None = None,
    profile: WeightProfile = SD15,
    hashes: bool = True,
    known: Mapping[str, dict] | None = None,
    progress: Callable[[Path, int, int], None] | None = None,
) -> list[Finding]:
    """Check an open_clip ``local-dir:`` folder (BiomedCLIP) and, for a Hugging Face text tower, its text-model
    folder (BiomedBERT's config.json + tokenizer files; default: ``biomedbert/`` beside ``folder``)."""
    folder = Path(folder)
    findings = _Findings()
    known = load_known_hashes() if known is None and hashes else (known or {})
    how = f"download {BIOMEDCLIP_REPO} into this folder"
    if not folder.is_dir():
        findings.add(
            MISSING, folder, f"folder not found; it should hold {OPEN_CLIP_CONFIG} and {OPEN_CLIP_WEIGHTS}; {how}"
        )
        return list(findings)
    config_path = folder / OPEN_CLIP_CONFIG
    model_cfg = _open_clip_model_cfg(findings, config_path, how)
    weights, header = _open_clip_weights(findings, folder, how)
    if model_cfg is not None:
        _check_clip_config(findings, config_path, model_cfg, text_model_dir, weights, header, profile)

    if hashes and weights is not None and (header is not None or is_pickle_name(weights)):
        _check_hash(findings, weights, known, weights.name, progress, header[1] if header else None)
    elif not hashes:
        findings.add(NOTE, folder, "hashes not computed (--nohashes)")
    return list(findings)


def _open_clip_model_cfg(findings: _Findings, config_path: Path, how: str) -> dict | None:
    """The ``model_cfg`` of an open_clip config, or None after reporting why there is none."""
    if not config_path.is_file():
        findings.add(MISSING, config_path, f"the open_clip config; {how}")
        return None
    config = _read_json(findings, config_path, "an open_clip config")
    if config is None:
        return None
    model_cfg = config.get("model_cfg")
    if not isinstance(model_cfg, dict):
        findings.add(UNREADABLE, config_path, "no 'model_cfg' section: not an open_clip config")
        return None
    findings.add(OK, config_path, "an open_clip config")
    return model_cfg


def _open_clip_weights(findings: _Findings, folder: Path, how: str) -> tuple[Path | None, tuple | None]:
    """The weight file the loader reads (reporting the others it ignores) and its safetensors header."""
    weights = open_clip_weights(folder)
    header = None
    if weights is None:
        others = " / ".join(n for n in OPEN_CLIP_WEIGHT_NAMES[1:] if not is_pickle_name(n))
        findings.add(
            MISSING,
            folder / OPEN_CLIP_WEIGHTS,
            f"no weight file (or {others}); {how}, then convert its open_clip_pytorch_model.bin with --convert",
        )
        return None, None
    if is_pickle_name(weights):
        findings.add(
            NOT_ACCEPTED,
            weights,
            convert_hint(weights, folder / OPEN_CLIP_WEIGHTS) + " (it is the weight file the loader would read)",
        )
        findings.add(NOTE, weights, "tensor shapes not checked: they are read from a safetensors header")
    else:
        findings.add(OK, weights, "present (the loader reads this file)")
        header = _read_header(findings, weights)
    for name in OPEN_CLIP_WEIGHT_NAMES:
        other = folder / name
        if other.is_file() and other != weights:
            findings.add(NOTE, other, f"ignored: the loader reads {weights.name}")
    return weights, header


def _check_clip_config(
    findings: _Findings,
    config_path: Path,
    model_cfg: dict,
    text_model_dir: str | os.PathLike | None,
    weights: Path | None,
    header: tuple | None,
    profile: WeightProfile,
) -> None:
    """The open_clip config's values and sizes, its text-model folder, and the weight shapes they imply."""
    hf_name = (model_cfg.get("text_cfg") or {}).get("hf_model_name")
    if "multimodal_cfg" in model_cfg:
        findings.add(WRONG_SHAPE, config_path, "CoCa models (multimodal_cfg) are not supported; use a CLIP")
    bert = None
    if hf_name:
        if text_model_dir is None:
            text_model_dir = config_path.parent.parent / DEFAULT_BIOMEDBERT
            findings.add(
                NOTE,
                text_model_dir,
                f"the text tower is {hf_name}; no --biomedbert given, so the "
                "folder beside the BiomedCLIP one is checked (the configs' layout)",
            )
        how = (
            f"a folder with {TEXT_MODEL_CONFIG} and the tokenizer files (vocab.txt, tokenizer_config.json) of "
            f"{hf_name}, e.g. `huggingface-cli download {BIOMEDBERT_REPO} config.json vocab.txt "
            f"tokenizer_config.json --local-dir <folder>`"
        )
        absent = f"optional: {BIOMEDBERT_REPO} publishes one with do_lower_case true, which is also the default"
        bert = _check_bert_folder(findings, Path(text_model_dir), how, profile, "biomedbert", absent)
    _check_values(findings, config_path, model_cfg, profile, "biomedclip")
    _check_clip_sizes(findings, config_path, model_cfg, bert)
    if header is not None:
        _check_clip_tensors(findings, weights, header[0], model_cfg, bert, profile)


def _check_bert_folder(
    findings: _Findings, folder: Path, how: str, profile: WeightProfile, part: str, absent_tokenizer_config: str
) -> dict | None:
    """A BERT folder's config.json (the profile's ``part`` values, the sizes the weights need) and tokenizer
    vocabulary; returns the config when its sizes are usable. ``absent_tokenizer_config``: the note when
    tokenizer_config.json is not there."""
    if not folder.is_dir():
        findings.add(MISSING, folder, f"text-model folder not found; it should be {how}")
        return None
    config = None
    if not (folder / TEXT_MODEL_CONFIG).is_file():
        findings.add(MISSING, folder / TEXT_MODEL_CONFIG, f"the text model's config; {how}")
    else:
        config = _read_json(findings, folder / TEXT_MODEL_CONFIG, "a Hugging Face model config")
    vocab = next((folder / name for name in TEXT_MODEL_VOCABS if (folder / name).is_file()), None)
    if vocab is None:
        findings.add(
            MISSING,
            folder / TEXT_MODEL_VOCABS[0],
            f"the tokenizer vocabulary (or {' / '.join(TEXT_MODEL_VOCABS[1:])}); {how}",
        )
    else:
        findings.add(OK, vocab, "tokenizer vocabulary present")
    for name in TEXT_MODEL_OPTIONAL:
        if not (folder / name).is_file():
            findings.add(NOTE, folder / name, f"absent ({absent_tokenizer_config})")
    if config is None:
        return None
    _check_values(findings, folder / TEXT_MODEL_CONFIG, config, profile, part)
    if not _need(
        findings,
        folder / TEXT_MODEL_CONFIG,
        config,
        {"hidden_size": _int, "vocab_size": _int, "max_position_embeddings": _int},
    ):
        return None
    if vocab is not None and vocab.name == "vocab.txt":
        words = sum(1 for line in vocab.read_text(encoding="utf-8", errors="replace").splitlines() if line)
        if words > config["vocab_size"]:
            findings.add(WRONG_SHAPE, vocab, f"{words} words, more than the model's vocab_size {config['vocab_size']}")
        else:
            findings.add(OK, vocab, f"{words} words fit vocab_size {config['vocab_size']}")
    return config


def _check_clip_sizes(findings: _Findings, path: Path, model_cfg: dict, bert: dict | None) -> None:
    """What :meth:`MedicalClipEncoder.from_local_dir` needs of the config besides its files."""
    size = _dotted(model_cfg, "vision_cfg.image_size")
    if isinstance(size, list) and len(set(size)) != 1:
        findings.add(WRONG_SHAPE, path, f"non-square image size {tuple(size)} is not supported")
    context = _dotted(model_cfg, "text_cfg.context_length")
    if bert is not None and _int(context):
        if context > bert["max_position_embeddings"]:
            findings.add(
                WRONG_SHAPE,
                path,
                f"text_cfg.context_length {context} is more than the text model's "
                f"max_position_embeddings {bert['max_position_embeddings']}",
            )
        else:
            findings.add(
                OK,
                path,
                f"text_cfg.context_length {context} fits the text model's {bert['max_position_embeddings']} positions",
            )


def _check_clip_tensors(
    findings: _Findings,
    path: Path,
    shapes: Mapping[str, tuple[int, ...]],
    model_cfg: dict,
    bert: dict | None,
    profile: WeightProfile,
) -> None:
    tensors = _Tensors(findings, path, shapes)
    config_path = path.with_name(OPEN_CLIP_CONFIG)
    if not _need(findings, config_path, model_cfg, {"embed_dim": _int}):
        return
    embed = model_cfg["embed_dim"]
    vision = model_cfg.get("vision_cfg") or {}
    text = model_cfg.get("text_cfg") or {}
    if vision.get("timm_model_name"):
        _check_timm_vision(findings, path, tensors, vision, embed)
    else:
        width, patch, size = vision.get("width", 768), vision.get("patch_size", 16), vision.get("image_size", 224)
        size = size[0] if isinstance(size, list) and size else size
        if all(_int(v) for v in (width, patch, size)):
            tensors.expect("visual.conv1.weight", (width, 3, patch, patch), "vision width, patch_size")
            tensors.expect(
                "visual.positional_embedding",
                ((size // patch) ** 2 + 1, width),
                "(image_size / patch_size)^2 + 1, vision width",
            )
            tensors.expect("visual.proj", (width, embed), "vision width, embed_dim")
    if text.get("hf_model_name"):
        if bert is not None:
            _check_hf_text(tensors, text, bert, embed)
    else:
        width, vocab, context = text.get("width", 512), text.get("vocab_size", 49408), text.get("context_length", 77)
        if all(_int(v) for v in (width, vocab, context)):
            tensors.expect("text.token_embedding.weight", (vocab, width), "text vocab_size, width")
            tensors.expect("text.positional_embedding", (context, width), "context_length, text width")
            tensors.expect("text.text_projection", (width, embed), "text width, embed_dim")
    tensors.pins(profile, "biomedclip")


def _check_timm_vision(
    findings: _Findings, path: Path, tensors: _Tensors, vision: Mapping[str, Any], embed: int
) -> None:
    """A timm image trunk (BiomedCLIP's ViT): its projection to ``embed``, square RGB patches, positions that fit
    the image size."""
    patch = tensors.get("visual.trunk.patch_embed.proj.weight")
    if vision.get("timm_proj", "linear") == "linear":
        width = patch[0] if patch else (tensors.get("visual.head.proj.weight") or (None, None))[1]
        tensors.expect("visual.head.proj.weight", (embed, width), "embed_dim, the image trunk's width")
    if patch is None:
        findings.add(
            NOTE, path, "the timm image trunk has no patch embedding (not a ViT); only its projection is checked"
        )
        return
    if len(patch) != 4 or patch[1] != 3 or patch[2] != patch[3]:
        findings.add(
            WRONG_SHAPE,
            path,
            f"visual.trunk.patch_embed.proj.weight is {patch}, expected "
            "(width, 3, patch, patch): square patches of RGB images",
        )
        return
    findings.add(OK, path, f"visual.trunk.patch_embed.proj.weight {patch}: {patch[2]}-pixel RGB patches")
    size = vision.get("image_size", 224)
    size = size[0] if isinstance(size, list) and size else size
    positions = tensors.get("visual.trunk.pos_embed")
    if positions is None or not _int(size):
        return
    grid = (size // patch[2]) ** 2
    if len(positions) != 3 or positions[1] - grid not in (0, 1) or positions[2] != patch[0]:
        findings.add(
            WRONG_SHAPE,
            path,
            f"visual.trunk.pos_embed is {positions}; image_size {size} "
            f"with {patch[2]}-pixel patches needs (1, {grid} or "
            f"{grid + 1}, {patch[0]})",
        )
    else:
        findings.add(OK, path, f"visual.trunk.pos_embed {positions} fits image_size {size}")


def _check_hf_text(tensors: _Tensors, text: Mapping[str, Any], bert: Mapping[str, Any], embed: int) -> None:
    """A Hugging Face text tower (BiomedBERT): embeddings of the text model's sizes and open_clip's projection."""
    width, vocab, positions = bert["hidden_size"], bert["vocab_size"], bert["max_position_embeddings"]
    tensors.expect(
        "text.transformer.embeddings.word_embeddings.weight", (vocab, width), "text model vocab_size, hidden_size"
    )
    tensors.expect(
        "text.transformer.embeddings.position_embeddings.weight",
        (positions, width),
        "text model max_position_embeddings, hidden_size",
    )
    proj = text.get("hf_proj_type", "mlp")
    if proj == "mlp":
        hidden = (width + embed) // 2
        tensors.expect("text.proj.0.weight", (hidden, width), "open_clip's MLP projection: hidden_size in")
        tensors.expect("text.proj.2.weight", (embed, hidden), "open_clip's MLP projection: embed_dim out")
    elif proj == "linear":
        tensors.expect("text.proj.weight", (embed, width), "embed_dim, hidden_size")


# ------------------------------------------------------------------ PixArt-alpha + Bio_ClinicalBERT
def check_pixart(
    folder: str | os.PathLike,
    profile: WeightProfile = PIXART_ALPHA,
    hashes: bool = True,
    known: Mapping[str, dict] | None = None,
    progress: Callable[[Path, int, int], None] | None = None,
) -> list[Finding]:
    """Check a PixArt-alpha folder in diffusers layout for VG-MedGen's full profile: ``transformer/``, ``vae/``,
    ``scheduler/`` (T5's ``text_encoder/`` and ``tokenizer/`` are not read, so not required); every problem is
    reported, none raised."""
    folder = Path(folder)
    findings = _Findings()
    known = load_known_hashes() if known is None and hashes else (known or {})
    if not folder.is_dir():
        findings.add(MISSING, folder, f"folder not found; it should hold {', '.join(pixart_files())}; {PIXART_HOW}")
        return list(findings)
    _check_part_files(findings, folder, list(PIXART_PARTS))
    configs = _read_configs(findings, folder, PIXART_CONFIGS)
    headers = _read_part_headers(findings, folder, PIXART_PARTS)
    transformer, vae = configs.get("transformer"), configs.get("vae")
    for part, config in (("transformer", transformer), ("vae", vae)):
        if config is not None:
            _check_values(findings, folder / f"{part}/config.json", config, profile, part)
    _check_transformer(findings, folder, transformer, headers.get("transformer"), profile)
    _check_vae(findings, folder, vae, headers.get("vae"), profile)
    if transformer is not None and vae is not None:
        channels = vae.get("latent_channels")
        if transformer.get("in_channels") != channels:
            findings.add(
                WRONG_SHAPE,
                folder / "transformer/config.json",
                f"the transformer takes {transformer.get('in_channels')} input channels, the VAE's latents have "
                f"{channels}: transformer/ and vae/ must come from one model",
            )
        else:
            findings.add(OK, folder / "transformer/config.json", f"in_channels = VAE latent_channels = {channels}")
    _check_part_hashes(findings, folder, list(PIXART_PARTS), headers, known, progress, hashes)
    return list(findings)


def _check_transformer(
    findings: _Findings, folder: Path, config: dict | None, header: tuple | None, profile: WeightProfile
) -> None:
    """PixArt's transformer: a learned-sigma or plain output (what :class:`DiTDenoiser` accepts) and the tensors of
    its patch embedding, caption projection and output projection against its config."""
    path = folder / "transformer/config.json"
    if config is not None and _need(findings, path, config, {"in_channels": _int, "out_channels": _int}):
        inputs, outputs = config["in_channels"], config["out_channels"]
        if outputs not in (inputs, 2 * inputs):
            findings.add(
                WRONG_SHAPE,
                path,
                f"out_channels {outputs} is neither in_channels {inputs} nor twice it (learned sigma)",
            )
    if header is None:
        return
    tensors = _Tensors(findings, folder / "transformer/diffusion_pytorch_model.safetensors", header[0])
    tensors.pins(profile, "transformer")
    sizes = ("in_channels", "out_channels", "patch_size", "num_attention_heads", "attention_head_dim")
    sizes += ("caption_channels",)
    if config is None or not _need(findings, path, config, dict.fromkeys(sizes, _int)):
        return
    width, patch = config["num_attention_heads"] * config["attention_head_dim"], config["patch_size"]
    tensors.expect(
        "pos_embed.proj.weight",
        (width, config["in_channels"], patch, patch),
        "num_attention_heads x attention_head_dim, in_channels, patch_size",
    )
    tensors.expect(
        "caption_projection.linear_1.weight",
        (width, config["caption_channels"]),
        "the width, caption_channels (the conditions VG-MedGen's fusion makes)",
    )
    tensors.expect(
        "proj_out.weight", (patch * patch * config["out_channels"], width), "patch_size^2 x out_channels, the width"
    )


def check_clinical_bert(
    folder: str | os.PathLike,
    profile: WeightProfile = PIXART_ALPHA,
    hashes: bool = True,
    known: Mapping[str, dict] | None = None,
    progress: Callable[[Path, int, int], None] | None = None,
) -> list[Finding]:
    """Check a BERT folder (Bio_ClinicalBERT) for VG-MedGen's full-profile text encoder: config.json, safetensors
    weights (a pickle is refused; ``--convert``), the tokenizer vocabulary, and the embedding shapes the config
    implies; every problem is reported, none raised."""
    folder = Path(folder)
    findings = _Findings()
    known = load_known_hashes() if known is None and hashes else (known or {})
    if not folder.is_dir():
        findings.add(MISSING, folder, f"folder not found; {CLINICAL_BERT_HOW}")
        return list(findings)
    # the weights here; config.json and the vocabulary with the BERT folder's own checks
    _check_part_files(findings, folder, [replace(CLINICAL_BERT_PART, files=(CLINICAL_BERT_PART.weights,))])
    absent = "optional: the published Bio_ClinicalBERT has none; the tokenizer then lower-cases, transformers' default"
    config = _check_bert_folder(findings, folder, CLINICAL_BERT_HOW, profile, "clinical_bert", absent)
    header = _read_part_headers(findings, folder, [CLINICAL_BERT_PART]).get(CLINICAL_BERT_PART.name)
    if header is not None:
        # a BertModel saves bare names; Bio_ClinicalBERT's BertForPreTraining file (converted) has ``bert.``
        tensors = _Tensors(findings, folder / CLINICAL_BERT_PART.weights, header[0], ("bert.", ""))
        tensors.pins(profile, "clinical_bert")
        if config is not None:
            width = config["hidden_size"]
            tensors.expect(
                "embeddings.word_embeddings.weight", (config["vocab_size"], width), "vocab_size, hidden_size"
            )
            tensors.expect(
                "embeddings.position_embeddings.weight",
                (config["max_position_embeddings"], width),
                "max_position_embeddings, hidden_size",
            )
    headers = {CLINICAL_BERT_PART.name: header}
    _check_part_hashes(findings, folder, [CLINICAL_BERT_PART], headers, known, progress, hashes)
    return list(findings)


# ------------------------------------------------------------------ all
def check_weights(
    sd15: str | os.PathLike | None = None,
    biomedclip: str | os.PathLike | None = None,
    biomedbert: str | os.PathLike | None = None,
    profile: str | WeightProfile | None = None,
    hashes: bool = True,
    known: Mapping[str, dict] | None = None,
    progress: Callable[[Path, int, int], None] | None = None,
    latent: bool = True,
    pixart: str | os.PathLike | None = None,
    clinical_bert: str | os.PathLike | None = None,
) -> Report:
    """Check the folders given (any may be None, not all) and return every finding.

    ``profile`` None: each folder against its own model's published figures (``sd15`` for SD 1.5 and BiomedCLIP,
    ``pixart_alpha`` for PixArt-alpha and Bio_ClinicalBERT); a named profile applies to every folder."""
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; one of {sorted(PROFILES)}")
        profile = PROFILES[profile]
    if sd15 is None and biomedclip is None and pixart is None and clinical_bert is None:
        raise ValueError("nothing to check: give an SD 1.5, BiomedCLIP, PixArt or clinical BERT folder")
    known = load_known_hashes() if known is None and hashes else (known or {})
    medsoft, vgmedgen = profile or SD15, profile or PIXART_ALPHA
    report = Report()
    if sd15 is not None:
        report.findings += check_sd15(sd15, medsoft, hashes, known, progress, latent)
    if biomedclip is not None:
        report.findings += check_biomedclip(biomedclip, biomedbert, medsoft, hashes, known, progress)
    if pixart is not None:
        report.findings += check_pixart(pixart, vgmedgen, hashes, known, progress)
    if clinical_bert is not None:
        report.findings += check_clinical_bert(clinical_bert, vgmedgen, hashes, known, progress)
    return report


def usable_sd15_folder(
    folder: str | os.PathLike, profile: str | WeightProfile = "sd15_inpaint", latent: bool = True
) -> Path:
    """``folder`` as a Path once :func:`check_sd15` finds it usable under ``profile`` (without hashes: the configs
    and the safetensors headers only, no tensor is read), for a config to check its pretrained folder before the
    model loads; else an :class:`InputError` naming the first problem's file and what is wrong (the config value or
    tensor shape found and the one expected), with how many more ``scripts/check_weights.py`` would list."""
    report = check_weights(sd15=folder, profile=profile, hashes=False, latent=latent)
    failures = report.failures()
    if failures:
        name = profile if isinstance(profile, str) else profile.name
        more = (
            f"; {len(failures) - 1} more problem(s): `python scripts/check_weights.py --sd15 {folder} --profile "
            f"{name} --nohashes` lists them"
            if len(failures) > 1
            else ""
        )
        raise InputError(failures[0].path, f"{failures[0].status}: {failures[0].message}{more}")
    return Path(folder)
