"""FVD feature detectors: the two published I3D weight files and a toy stand-in.

Detector input rule: uint8 frames (B, T, H, W, 3) are resized to 224x224 with bilinear
interpolation (``F.interpolate``, ``align_corners=False``, i.e. half-pixel centres, no
antialiasing), mapped to [-1, 1] by ``2 * x / 255 - 1``, laid out (B, 3, T, 224, 224), T >= 9.
Which references sample the same grid: TATS and cd-fvd (``preprocess_i3d``: ``F.interpolate``,
bilinear, ``align_corners=False``) and StyleGAN-V's TorchScript detector when asked to resize
itself (its exported resize is the same PyTorch op) -- our resize equals theirs. The original TF
code (google-research ``frechet_video_distance.preprocess``) uses TF1's
``tf.image.resize_bilinear`` with its defaults ``align_corners=False, half_pixel_centers=False``:
another sampling grid (output pixel i samples input i * in/out, not (i + 0.5) * in/out - 0.5), so
its pixels, and FVDs computed with it, differ slightly. None of them antialiases.
The feature is the 400-d Kinetics logit vector before the softmax, averaged over time, in float64.
TF32 is switched off during extraction (and restored afterwards).

Kinds:

* ``torchscript`` -- StyleGAN-V's ``i3d_torchscript.pt`` (a TorchScript export of the tf.hub I3D
  used by the original FVD code). StyleGAN-V calls it as ``detector(x, rescale=True, resize=True,
  return_features=True)`` on uint8-valued (B, 3, T, H, W) tensors and lets it rescale and resize
  internally. With ``rescale=False, resize=False`` it takes float [-1, 1] clips already at 224x224
  (how StyleGAN-V's author compares it with the TF model, universome/fvd-comparison, and how
  common_metrics_on_video_quality calls it). We use the latter so that both weight files see
  bit-identical inputs from our own preprocessing; ``return_features=True`` returns the
  pre-softmax logits.
* ``i3d400`` -- the PyTorch InceptionI3d state dict of TATS / cd-fvd (``i3d_pretrained_400.pt``),
  loaded into our own port (sfv_fvd/i3d.py, same keys and shapes).
* ``toy`` -- a seeded random-init InceptionI3d at 1/16 width with a temporal-derivative first
  layer and noise-calibrated BatchNorm (the embedded default; sfv_fvd/toy.py). Its numbers
  are labelled "toy detector" everywhere and are NOT comparable with any published FVD.

Weights are never downloaded: a path, or a name ('stylegan-v', 'tats') looked up in
``cache_dir('detectors')`` ($SFV_BENCH_CACHE/detectors). Known files are checked against pins.
"""
from __future__ import annotations

import copy
import hashlib
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfv_core.env import tf32_disabled
from sfv_core.errors import UserError
from sfv_core.fsutil import cache_dir, sha256_file

from .i3d import DETECTOR_SIZE, FEATURE_DIM, MIN_FRAMES, InceptionI3d
from .toy import TOY_LABEL, toy_model

# Published files. Where each comes from, and what may be pinned:
#  * i3d_torchscript.pt: StyleGAN-V, https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt
#    (src/metrics/frechet_video_distance.py). No public code we could find states its sha256.
#    A copy is committed to github.com/JunyaoHu/common_metrics_on_video_quality
#    (fvd/styleganv/i3d_torchscript.pt) as git blob 93daef59c7ae0e9e8f76225521407e60cbafa6aa.
#  * i3d_pretrained_400.pt: TATS, github.com/songweige/TATS tats/fvd/i3d_pretrained_400.pt, the file
#    cd-fvd downloads; git blob a867b87ac3a9097d200598b1d48a1b890d8ec744 (the same blob is committed
#    in JunyaoHu/common_metrics_on_video_quality fvd/videogpt/). No public sha256 found.
# A git blob id is sha1(b"blob <size>\0" + content): a content hash taken from those repositories'
# own trees, so it pins the exact bytes. Add sha256 values here once verified on the real files.
KNOWN_SHA256: dict[str, str] = {}
KNOWN_GIT_BLOB_SHA1: dict[str, str] = {
    "i3d_torchscript.pt": "93daef59c7ae0e9e8f76225521407e60cbafa6aa",
    "i3d_pretrained_400.pt": "a867b87ac3a9097d200598b1d48a1b890d8ec744",
}
NAMED = {
    "stylegan-v": ("i3d_torchscript.pt",
                   "published by StyleGAN-V: https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt"),
    "tats": ("i3d_pretrained_400.pt",
             "published by TATS: https://github.com/songweige/TATS/raw/main/tats/fvd/i3d_pretrained_400.pt"),
}
NAMED["cd-fvd"] = NAMED["tats"]


class DetectorWeightsWarning(UserWarning):
    """A weight file that is not (or cannot be checked to be) the published one."""


def git_blob_sha1(path) -> str:
    """Git's object id of a file's content: sha1(b"blob <size>\\0" + bytes)."""
    path = Path(path)
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def preprocess(videos, device="cpu", size: int = DETECTOR_SIZE) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float32 (B, 3, T, size, size) in [-1, 1] (TATS / cd-fvd rule)."""
    x = torch.from_numpy(np.ascontiguousarray(videos)) if isinstance(videos, np.ndarray) else videos
    if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 videos (B, T, H, W, 3), got {tuple(x.shape)} {x.dtype}")
    b, t, h, w, c = x.shape
    if t < MIN_FRAMES:
        raise ValueError(f"I3D needs at least {MIN_FRAMES} frames per clip, got {t}")
    s = size
    x = x.to(device).permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w).float()
    if (h, w) != (s, s):
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
    out = torch.empty((b, c, t, s, s), dtype=torch.float32, device=x.device)
    torch.mul(x.view(b, t, c, s, s).transpose(1, 2), 2.0, out=out)   # (B, C, T, H, W), one pass
    return out.div_(255.0).sub_(1.0)                                  # = 2 * x / 255 - 1


class Detector:
    """A loaded I3D: ``features(videos)`` gives float64 (B, feature_dim) pre-softmax logits.

    Attributes: name, kind ('torchscript' | 'i3d400' | 'toy' | 'mini'), sha256 (of the weight file, or
    of the toy's state dict), path (None for the toy), is_toy (numbers not comparable with published
    FVD), verified (matches a published pin), label (human string printed next to every number),
    feature_dim (400 for the published ones), input_size (224 for the published ones), device.
    """

    def __init__(self, model, kind: str, name: str, sha256: str, path=None, device="cpu",
                 label: str | None = None, verified: bool = False, feature_dim: int = FEATURE_DIM,
                 input_size: int = DETECTOR_SIZE):
        self.model = model.eval().to(device)
        self.kind, self.name, self.sha256 = kind, name, sha256
        self.path = Path(path) if path is not None else None
        self.device = torch.device(device)
        self.verified = verified
        self.feature_dim = feature_dim
        self.input_size = input_size
        self.label = label or name

    @property
    def is_toy(self) -> bool:
        return self.kind in ("toy", "mini")

    def __repr__(self) -> str:
        return f"Detector({self.label!r}, kind={self.kind}, sha256={self.sha256[:12]}, device={self.device})"

    @torch.no_grad()
    def features(self, videos) -> np.ndarray:
        with tf32_disabled():
            x = preprocess(videos, self.device, self.input_size)
            if self.kind == "torchscript":          # a file's own code: its failure is said in one line
                try:
                    y = self.model(x, rescale=False, resize=False, return_features=True)
                except (RuntimeError, TypeError) as e:
                    raise UserError(f"detector {self.name} failed on clips {tuple(x.shape)} "
                                    f"({(str(e).strip().splitlines() or [type(e).__name__])[0][:120]}): it does not "
                                    f"take StyleGAN-V's I3D call (x, rescale, resize, return_features); pass another "
                                    f"--detector") from None
            else:
                y = self.model(x)
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        if shape != (x.shape[0], self.feature_dim):
            raise UserError(f"detector {self.name} returned {shape} for {x.shape[0]} clips, not ({x.shape[0]}, "
                            f"{self.feature_dim}) features: it is not an I3D feature extractor with the "
                            f"{'StyleGAN-V calling convention' if self.kind == 'torchscript' else 'expected output'}; "
                            f"pass another --detector")
        return y.double().cpu().numpy()


# ----------------------------------------------------------------------------------------- toy

def toy_detector(seed: int = 0, device="cpu") -> Detector:
    """The seeded toy I3D (sfv_fvd/toy.py), a private copy per call."""
    model, digest = toy_model(seed)
    return Detector(copy.deepcopy(model), "toy", f"toy-i3d-seed{seed}", digest, None, device,
                    label=TOY_LABEL.format(seed=seed), verified=False)


# -------------------------------------------------------------------------------- weight files

def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def check_pin(path: Path, sha256: str, strict: bool = False) -> bool:
    """True if the file is a published one (sha256 or git blob pin); warns (or raises) otherwise."""
    if sha256 in KNOWN_SHA256.values():
        return True
    blob = git_blob_sha1(path)
    if blob in KNOWN_GIT_BLOB_SHA1.values():
        return True
    pinned = KNOWN_SHA256.get(path.name) or KNOWN_GIT_BLOB_SHA1.get(path.name)
    if pinned:
        msg = (f"{path}: content does not match the published {path.name} (sha256 {sha256}, git blob {blob}; "
               f"expected {pinned}); FVD from it is not comparable with published numbers")
        if strict:
            raise UserError(msg)
    else:
        msg = f"{path}: sha256 not in the known list ({sha256}); FVD from it may not match published numbers"
    warnings.warn(msg, DetectorWeightsWarning, stacklevel=3)
    return False


def _torch_load_reason(e: Exception) -> str:
    """torch.load's refusal in a few words (its message spans lines and asks to file an issue)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    found = re.search(r"WeightsUnpickler error:\s*(\S.*)", text)
    line = found.group(1) if found else next((x.strip() for x in text.splitlines() if x.strip()), type(e).__name__)
    return line.split(". ")[0][:120]            # its first sentence (the rest is advice to load it unsafely)


def _load_state_dict_file(path: Path) -> InceptionI3d:
    try:
        with warnings.catch_warnings():       # torch warns about pickle protocols in several lines
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a loadable state dict"
        raise UserError(f"{path}: cannot be read as a TorchScript module or a torch state dict of plain tensors "
                        f"(torch.load with weights_only=True: {_torch_load_reason(e)}); pass i3d_torchscript.pt, "
                        f"i3d_pretrained_400.pt or a file written by torch.save(model.state_dict())") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UserError(f"{path}: expected an InceptionI3d state dict, found {type(sd).__name__}")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    model = InceptionI3d(num_classes=FEATURE_DIM)
    ref = model.state_dict()
    missing, unexpected = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
    if missing or unexpected:
        raise UserError(f"{path}: not an InceptionI3d-400 state dict: {len(missing)} missing keys "
                        f"{missing[:4]}, {len(unexpected)} unexpected keys {unexpected[:4]}")
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in ref.items() if sd[k].shape != v.shape]
    if bad:
        raise UserError(f"{path}: {len(bad)} tensors have the wrong shape, e.g. {bad[:3]}")
    model.load_state_dict(sd)
    return model


def load_weights_file(path, device="cpu", strict_pin: bool = False, trust: bool = False) -> Detector:
    """Load a TorchScript I3D (StyleGAN-V convention) or an InceptionI3d-400 state dict.

    A state dict is read with ``weights_only=True`` (no code runs). A TorchScript file carries code
    that ``torch.jit.load`` executes: one that matches no published pin is refused unless ``trust``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"detector weights not found: {path}")
    digest = sha256_file(path)
    script = _is_torchscript(path)
    if not script:                              # read without running code; a file that is none is said first
        model = _load_state_dict_file(path)
    verified = check_pin(path, digest, strict=strict_pin)
    tag = "" if verified else ", unverified weights"
    if script and not (verified or trust):
        raise UserError(f"{path} is a TorchScript file that matches no published detector (sha256 {digest[:12]}); "
                        f"loading it runs code from the file: pass --trust-detector if you trust it")
    if script:
        try:
            with warnings.catch_warnings():   # TorchScript is deprecated in torch 2.x; the file format is fixed
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path}: cannot load TorchScript module ({str(e).splitlines()[0]})") from e
        return Detector(model, "torchscript", path.name, digest, path, device,
                        label=f"I3D TorchScript ({path.name}, sha256 {digest[:12]}{tag})", verified=verified)
    return Detector(model, "i3d400", path.name, digest, path, device,
                    label=f"I3D-400 state dict ({path.name}, sha256 {digest[:12]}{tag})", verified=verified)


def load_mini_detector(folder, device="cpu") -> Detector:
    """The mini world's trained I3D: ``folder/detector.json`` (architecture, sha256) and
    ``folder/detector.safetensors`` (its state dict, read by safetensors: no code runs), loaded strictly
    after checking the file against the recorded sha256. Written by ``sfv_train.classifier``."""
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    meta_path, weights = folder / "detector.json", folder / "detector.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise UserError(f"{folder}: not a mini detector folder (needs detector.json and detector.safetensors)")
    try:
        meta = json.loads(meta_path.read_text())
        k, width, size = int(meta["feature_dim"]), float(meta["width_mult"]), int(meta["input_size"])
        pinned = str(meta["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{meta_path}: damaged detector description ({e!r})") from None
    digest = sha256_file(weights)
    if digest != pinned:
        raise UserError(f"{weights}: sha256 {digest[:12]} does not match detector.json ({pinned[:12]}); "
                        f"the weights were changed or damaged: rebuild the detector")
    try:
        model = InceptionI3d(num_classes=k, width_mult=width, input_size=size)
        model.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as e:  # noqa: BLE001 - wrong keys or shapes, bad architecture values
        raise UserError(f"{weights}: does not fit the I3D in detector.json ({str(e).splitlines()[0]})") from None
    return Detector(model, "mini", "mini-i3d", digest, weights, device, feature_dim=k, input_size=size,
                    label="mini detector (I3D trained on the synthetic classes; not comparable with published FVD)")


def load_detector(spec: str | None = None, device="cpu", seed: int = 0, strict_pin: bool = False,
                  trust: bool = False, mini_world=None) -> Detector:
    """``spec``: 'toy' (seeded toy I3D), 'mini' (the trained I3D of the mini world in ``mini_world``, default the
    shipped one), a file path, or a name in the detector cache ('stylegan-v' -> i3d_torchscript.pt, 'tats' /
    'cd-fvd' -> i3d_pretrained_400.pt). Never downloads.
    None is refused (a UserError naming the choices): the toy is never picked silently."""
    if spec is None:
        raise UserError("no FVD detector given: pass 'toy' (random-init I3D for tests; its FVD is not comparable "
                        "with published FVD), 'stylegan-v' (i3d_torchscript.pt), 'tats' (i3d_pretrained_400.pt) "
                        "or a weight file path")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    det = _load_detector(spec, device, seed, strict_pin, trust, mini_world)
    det.spec = ("mini" if det.kind == "mini" else "toy" if det.is_toy and seed == 0
                else str(det.path) if det.path else str(spec))
    return det


def _load_detector(spec, device, seed, strict_pin, trust, mini_world=None) -> Detector:
    if str(spec).lower() == "toy":
        return toy_detector(seed, device)
    if str(spec).lower() == "mini":
        from methods.models.mini import mini_dir
        folder = mini_dir(mini_world) / "detector"
        if not (folder / "detector.json").is_file():
            raise UserError(f"the mini world's detector is not built ({folder} has no detector.json): "
                            f"run `sfv-bench build-mini`")
        return load_mini_detector(folder, device)
    spec = str(spec)
    if spec.lower() in NAMED:
        fname, where = NAMED[spec.lower()]
        path = cache_dir("detectors") / fname
        if not path.is_file():
            raise UserError(f"detector '{spec}' needs {path} ({where}); copy the file there or pass "
                            f"--detector PATH (weights are never downloaded)")
        return load_weights_file(path, device, strict_pin, trust)
    path = Path(spec).expanduser()
    if path.is_file():
        return load_weights_file(path, device, strict_pin, trust)
    if path.suffix or "/" in spec or "\\" in spec:
        raise UserError(f"detector weights not found: {path}")
    raise UserError(f"unknown detector '{spec}': use 'toy', a weight file path, or one of {sorted(NAMED)}")
