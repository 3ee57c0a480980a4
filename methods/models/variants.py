"""Weight variants: which safetensors files loading a stack or a UNet folder reads.

diffusers and transformers name a variant's files by inserting its name before the extension
(``diffusion_pytorch_model.fp16.safetensors``, ``model.fp16.safetensors``, a sharded model's
``....safetensors.index.fp16.json``): ``from_pretrained(..., variant="fp16")`` reads those, without it the
plain files. The SVD repositories hold both; diffusers' own SVD example downloads only the fp16 ones.

One rule, used by the pre-flight checks and by the loads alike (what the check passes, the load loads):
a variant asked for must be there for every component; with none asked for, the plain files when every
component has them, else the one variant every component has (``fp16``, then any other), else a
``UserError`` naming the missing files. Only safetensors count (loading never unpickles).
"""
from __future__ import annotations

import json
from pathlib import Path

from sfv_core.errors import UserError
from sfv_core.fsutil import folder_sha256

STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "image_encoder": "model"}
PREFERRED = ("fp16",)


def parse_variant(text: str | None) -> str | None:
    """``--variant``: a variant name such as fp16; None or 'auto': by the rule above."""
    if text is None or text == "auto":
        return None
    if not text.replace("_", "").isalnum():
        raise UserError(f"--variant takes a weight variant name such as fp16, or auto (got {text!r})")
    return text


def variant_name(name: str, variant: str | None) -> str:
    """``model.safetensors`` -> ``model.fp16.safetensors`` (diffusers' and transformers' naming)."""
    if not variant:
        return name
    parts = name.split(".")
    return ".".join(parts[:-1] + [variant, parts[-1]])


def weight_files(folder: Path, stem: str, variant: str | None) -> list[Path] | None:
    """The files one model folder's load reads for ``variant``: the single weight file, or the index and
    its shards; None when they are not all there."""
    folder = Path(folder)
    single = folder / variant_name(f"{stem}.safetensors", variant)
    if single.is_file():
        return [single]
    index = folder / variant_name(f"{stem}.safetensors.index.json", variant)
    if not index.is_file():
        return None
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{index} is not a readable weight index: download it again") from None
    files = [folder / s for s in shards]
    return [index, *files] if files and all(f.is_file() for f in files) else None


def _found_variants(folder: Path, stem: str) -> set:
    """Variant names that files of ``folder`` carry (``stem.<v>.safetensors``, sharded ones too)."""
    out = set()
    for p in Path(folder).glob(f"{stem}.*"):
        rest = p.name[len(stem) + 1:].split(".")
        if rest[-1] == "safetensors" and len(rest) == 2:
            out.add(rest[0].split("-")[0])                    # fp16 or fp16-00001-of-00002
        elif rest[-1] == "json" and rest[:2] == ["safetensors", "index"] and len(rest) == 4:
            out.add(rest[2])
    return out


def choose_variant(parts: dict, variant: str | None, what: str) -> str | None:
    """The variant to load ``parts`` ({folder: stem}) with (see the module doc); ``what`` names them in errors."""
    def missing(v):
        return [str(Path(f) / variant_name(f"{s}.safetensors", v)) for f, s in parts.items()
                if weight_files(f, s, v) is None]

    if variant:
        gone = missing(variant)
        if gone:
            among = f" among {len(gone)}" if len(gone) > 1 else ""
            raise UserError(f"{what} has no {variant} weights ({gone[0]} is missing{among}): drop --variant "
                            f"{variant} to load the files that are there, or download them")
        return variant
    if not missing(None):
        return None
    found = set.intersection(*(_found_variants(f, s) for f, s in parts.items())) if parts else set()
    for v in [*PREFERRED, *sorted(found - set(PREFERRED))]:
        if v in found and not missing(v):
            return v
    gone = missing(None)
    raise UserError(f"{what} lacks safetensors weights ({gone[0]} is missing, and no variant such as fp16 is complete "
                    f"in every component): download it again")


def stack_parts(folder: Path, with_unet: bool = True) -> dict:
    """{component folder: weight stem} of a pipeline folder (the UNet's left out when another replaces it)."""
    return {Path(folder) / sub: stem for sub, stem in STEMS.items() if with_unet or sub != "unet"}


def stack_variant(folder: Path, variant: str | None = None, with_unet: bool = True) -> str | None:
    return choose_variant(stack_parts(folder, with_unet), variant, f"stack {folder}")


def model_sha256(folder: Path, stem: str, variant: str | None) -> str:
    """Content identity of one component as loaded: its json files and the variant's weight files (for a
    folder of plain files only, the same as ``folder_sha256``)."""
    files = weight_files(folder, stem, variant) or []
    return folder_sha256(folder, ("*.json", *(f.name for f in files)))
