"""The evaluation protocol: every value that changes a number lives here and is recorded with it.

Rules (SF-V paper sec. 4.2; docs/reference.md#conditioning-geometry and #fvd-statistics):

* Conditioning image (``cond_resize``): frame 0 of the source video, given to the method at its
  native size. ``"stretch"`` (default, the paper's reading and diffusers' own behaviour): the CLIP
  embedding is computed from that frame (antialiased resize to 224), and the frame is stretched
  to gen_w x gen_h with PIL's Lanczos resize (``VaeImageProcessor.resize``, no crop) for the VAE:
  exactly what ``StableVideoDiffusionPipeline(image, height=576, width=1024)`` does with a
  320x240 frame. ``"cover-center-crop"`` (option): scale = max(gen_w / src_w, gen_h / src_h),
  bilinear (antialiased when shrinking), centre-cropped to gen_w x gen_h before the method sees
  it (320x240 -> 1024x768, rows 96..671), CLIP from the crop.
* Real clip: ``num_frames`` frames at ``fps`` taken from the source frame rate ``src_fps``:
  index_k = start + round(k * src_fps / fps), k = 0..num_frames-1 (round half up: floor(x + 0.5)) (with start = 0 for
  ``clip_start="first"``, the frame the generator is conditioned on, or a per-video seeded
  offset for ``"random"``, StyleGAN-V's rule). A video with fewer than index_last + 1 frames
  is skipped and counted.
* Scoring geometry: generated frames are stretched (bilinear, antialiased) back to
  score_w x score_h ("resized back to 320x240"); real clips keep their full native frame
  (``real_crop="none"``, default: a 320x240 UCF-101 clip is used as is). ``real_crop="match"``
  (with the crop rule) centre-crops the real clip to the generation aspect first.
* Detector input: score-size clips resized to 224x224 bilinear, mapped to [-1, 1].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


RESIZE_RULES = ("stretch", "cover-center-crop")
SPLITS = ("train", "test", "all")     # the split lists of ucfTrainTestlist, and its folds
FOLDS = (1, 2, 3)


@dataclass(frozen=True)
class GenerationConditions:
    """What every method generates with: SVD's defaults (docs/reference.md#svd-conditioning), the one place they are typed.

    ``decode_chunk_size`` frames are decoded together by the temporal VAE: it changes the output.
    ``decode_videos`` videos go through the VAE per call, each still decoded as its own video: 1 (SVD's
    pipeline at batch 1, bit for bit); more is faster for small latents and equal up to float rounding."""
    num_frames: int = 14
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    decode_chunk_size: int = 14
    width: int | None = None       # generation size; None: the conditioning image's own size
    height: int | None = None
    resize: str = "stretch"        # how an image of another size gets there (Protocol.cond_resize)
    decode_videos: int = 1         # videos per VAE decode call

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, conditions: "GenerationConditions | None" = None, **overrides) -> "GenerationConditions":
        """``conditions`` (default: SVD's) with keyword overrides, e.g. ``of(None, num_frames=3)``."""
        base = conditions if conditions is not None else cls()
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown generation condition(s) {sorted(unknown)}")
        return dataclasses.replace(base, **overrides) if overrides else base


GEN = GenerationConditions()


class _Condition:
    """A Protocol attribute that reads one field of the protocol's generation conditions."""

    def __init__(self, field: str):
        self.field = field

    def __get__(self, protocol, owner=None):
        return self if protocol is None else getattr(protocol.generation, self.field)


@dataclass(frozen=True, init=False)
class Protocol:
    """The evaluation protocol: selection, scoring geometry, FVD, and the generation conditions every method
    runs with (``generation``, a GenerationConditions: the one home of those values).

    Built and read with flat names: ``Protocol(num_frames=2, gen_width=64)``, ``p.num_frames``; a generation
    condition's protocol name is its GenerationConditions name, except gen_width, gen_height and cond_resize
    (width, height, resize). ``to_dict`` is flat too (what results and caches record)."""
    dataset: str = "ucf101"
    split: str = "test"            # train | test | all
    fold: int = 1                  # 1, 2, 3 (ucfTrainTestlist)
    num_videos: int = 2048         # N: videos selected (before skips)
    seed: int = 0
    balanced: bool = False         # round-robin over classes when selecting
    score_width: int = 320
    score_height: int = 240
    clip_start: str = "first"      # first | random
    real_crop: str = "none"        # none | match
    max_fail_frac: float = 0.05    # stop if more of the selection than this fails to decode
    generation: GenerationConditions = GenerationConditions(width=1024, height=576)   # SVD's, at the paper's size
    # FVD
    detector_size: int = 224
    covariance: str = "biased"     # biased (1/N, StyleGAN-V, cd-fvd) | unbiased (1/(N-1), TF, TATS)

    num_frames = _Condition("num_frames")
    fps = _Condition("fps")
    gen_width = _Condition("width")
    gen_height = _Condition("height")
    cond_resize = _Condition("resize")     # stretch | cover-center-crop
    motion_bucket_id = _Condition("motion_bucket_id")
    noise_aug_strength = _Condition("noise_aug_strength")
    decode_chunk_size = _Condition("decode_chunk_size")
    decode_videos = _Condition("decode_videos")

    def __init__(self, generation: GenerationConditions | None = None, **values):
        conditions = {c.field: values.pop(name) for name, c in _conditions().items() if name in values}
        fields = {f.name: f.default for f in dataclasses.fields(self) if f.name != "generation"}
        unknown = set(values) - set(fields)
        if unknown:
            raise TypeError(f"unknown protocol value(s) {sorted(unknown)}")
        for name, default in fields.items():
            object.__setattr__(self, name, values.get(name, default))
        base = generation if generation is not None else type(self).generation
        object.__setattr__(self, "generation", GenerationConditions.of(base, **conditions))
        self._check()

    def _check(self) -> None:
        checks = [
            (self.split in ("train", "test", "all"), f"split must be train, test or all (got {self.split!r})"),
            (self.fold in (1, 2, 3), f"fold must be 1, 2 or 3 (got {self.fold!r})"),
            (self.num_videos >= 1, f"num_videos must be >= 1 (got {self.num_videos})"),
            (self.num_frames >= 1 and self.fps >= 1, "num_frames and fps must be >= 1"),
            (self.clip_start in ("first", "random"), f"clip_start must be first or random (got {self.clip_start!r})"),
            (self.real_crop in ("match", "none"), f"real_crop must be none or match (got {self.real_crop!r})"),
            (self.cond_resize in RESIZE_RULES, f"cond_resize must be one of {', '.join(RESIZE_RULES)} "
                                               f"(got {self.cond_resize!r})"),
            (self.covariance in ("biased", "unbiased"), f"covariance must be biased or unbiased (got {self.covariance!r})"),
            (0.0 <= self.max_fail_frac < 1.0, "max_fail_frac must be in [0, 1)"),
            (self.decode_videos >= 1, f"decode_videos must be >= 1 (got {self.decode_videos})"),
            (self.gen_width % 8 == 0 and self.gen_height % 8 == 0, "generation size must be a multiple of 8"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def to_dict(self) -> dict:
        """Every value by its flat protocol name."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "generation"}
        return {**own, **{name: getattr(self, name) for name in _conditions()}}

    def replace(self, **kw) -> "Protocol":
        return dataclasses.replace(self, **kw)

    def conditions(self) -> GenerationConditions:
        return self.generation

    @property
    def metric_name(self) -> str:
        """Name that spells the protocol, StyleGAN-V style: fvd2048_14f_7fps_320x240."""
        return f"fvd{self.num_videos}_{self.num_frames}f_{self.fps}fps_{self.score_width}x{self.score_height}"


def _conditions() -> dict[str, _Condition]:
    """Protocol name -> the generation condition it reads."""
    return {name: c for name, c in vars(Protocol).items() if isinstance(c, _Condition)}


@dataclass(frozen=True, kw_only=True)
class World:
    """The defaults `sfv-bench run` uses in one world: protocol values, dataset, stacks, detector, methods."""
    name: str
    protocol: dict
    stack: str
    xt_stack: str
    detector: str
    methods: str                    # the default --methods
    optional_methods: str           # added to the default when their UNets ship (the mini world's distilled rows,
                                    # name = the folder under unets/)
    animatelcm_frames: int | None   # None: the protocol's frames
    toy: bool                       # numbers not comparable with the paper's
    dataset: dict | None = None     # make_synthetic parameters of a synthetic world's dataset (None: --data)
    batch_size: int = 1             # videos per generate call (throughput; the latency is timed at batch 1)
    label: str = ""                 # what every number of this world is, written on tables, JSON, plots, previews


WORLDS = {
    "mini": World(name="mini", protocol=dict(num_videos=64, gen_width=32, gen_height=32, score_width=32,
                                             score_height=32, balanced=True, decode_videos=2),
                  stack="mini", xt_stack="mini", detector="mini", methods="svd:25,svd:8,svd:4,onestep:1,static,real",
                  optional_methods="lcm:8,lcm:4,lcm:2,ufogen:1,ladd:1,sfv:1", animatelcm_frames=None, toy=True,
                  dataset=dict(seed=0, classes=10, groups=10, clips=5, frames=48), batch_size=16,
                  label="mini world (trained on synthetic data): not comparable with the paper"),
    "tiny": World(name="tiny", protocol=dict(num_videos=16, gen_width=64, gen_height=64, balanced=True,
                                             max_fail_frac=0.25),
                  stack="tiny", xt_stack="tiny", detector="toy",
                  methods="svd:8,svd:4,animatelcm:4,animatelcm:2,onestep:1", optional_methods="",
                  animatelcm_frames=None, toy=True, dataset=dict(seed=0),
                  label="tiny world (random-init models, toy detector): not comparable with the paper"),
    "ucf101": World(name="ucf101", protocol={}, stack="svd", xt_stack="svd-xt", detector="stylegan-v",
                    methods="",  # the default specs: sfv_core.paper.DEFAULT_SPECS
                    optional_methods="", animatelcm_frames=25, toy=False),
}


def tiny_protocol(**kw) -> Protocol:
    """The embedded tiny world: synthetic data, tiny stack, toy detector, small N."""
    return Protocol(**{**WORLDS["tiny"].protocol, **kw})
