"""The options of `sfv-bench run`, typed (``sfv_core.typed_config``: the command line is generated from
these fields and every value, typed or from ``--config FILE``, is validated against their hints). None:
the world's default, resolved in ``bench.settings``. Torch-free."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sfv_core.paper import DEFAULT_SPECS
from sfv_core.protocol import FOLDS, SPLITS, WORLDS
from sfv_core.typed_config import option

VARIANT_HELP = ("weight files of the stacks: fp16 = the *.fp16.safetensors that `from_pretrained(..., "
                "variant='fp16')` downloads (default: the plain files, else the one variant every component has)")
UNET_METHODS = ("animatelcm", "sfv", "ufogen", "ladd", "lcm", "onestep")   # --NAME-unet = --method-option NAME.unet=
_MINI, _TINY = WORLDS["mini"], WORLDS["tiny"]


def _unet(name: str, help: str):
    return option(None, f"{help} (the same as --method-option {name}.unet=DIR)", "UNets")


@dataclass
class RunConfig:
    data: str | None = option(None, "UCF-101 root (holding UCF-101/ and ucfTrainTestlist/); default: a synthetic "
                                    "world's dataset (see --world)")
    world: Literal["mini", "tiny"] | None = option(
        None, "without --data: mini (default; small models trained on the synthetic classes, shipped with the "
              "project) or tiny (random-init models, for tests); neither is the paper's numbers")
    split: Literal[SPLITS] | None = option(None, "UCF-101 split list the videos come from (default: test)")
    fold: Literal[FOLDS] | None = option(None, "split fold (default: 1)")
    num_videos: int | None = option(None, "N videos (tiny: 16, real: 2048)", aliases=("-n",))
    balanced: bool | None = option(None, "round-robin over classes")
    methods: list[str] | None = option(
        None, f"method specs, comma separated, repeatable (mini world: {_MINI.methods} and the distilled rows it "
              f"ships; tiny world: {_TINY.methods}; with --data: {DEFAULT_SPECS}); reference rows: static, real; "
              f"methods accumulate in a run folder")
    stack: str | None = option(None, "SVD stack for svd and one-step methods: tiny | svd | svd-xt | PATH")
    xt_stack: str | None = option(None, "stack for animatelcm (default: svd-xt; a synthetic world: its own)")
    variant: str | None = option(None, VARIANT_HELP)
    animatelcm_unet: str | None = _unet("animatelcm", "AnimateLCM-SVD-xt UNet folder or repo id (default "
                                                      "wangfuyun/AnimateLCM-SVD-xt from the HF cache)")
    sfv_unet: str | None = _unet("sfv", "UNet folder exported by `sfv-train --method sfv`")
    ufogen_unet: str | None = _unet("ufogen", "UNet folder exported by `sfv-train --method ufogen`")
    ladd_unet: str | None = _unet("ladd", "UNet folder exported by `sfv-train --method ladd`")
    lcm_unet: str | None = _unet("lcm", "UNet folder exported by `sfv-train --method lcm`")
    onestep_unet: str | None = _unet("onestep", "UNet folder for `onestep` (default: the stack's UNet)")
    animatelcm_frames: int | None = option(None, "frames AnimateLCM generates (25 = the released xt model, first 14 "
                                                 "scored: AnimateLCM*; tiny world default 14)")
    method_option: list[str] = option(None, "adapter option, repeatable (e.g. svd.max_guidance=2.5); `sfv-bench ls` "
                                            "lists them", default_factory=list, metavar="NAME.KEY=VALUE")
    detector: str | None = option(None, "toy | stylegan-v | tats | PATH (default: toy in the tiny world, "
                                        "stylegan-v with --data)")
    trust_detector: bool = option(False, "allow a TorchScript detector file that matches no published pin (loading "
                                         "it runs its code)")
    device: str | None = option(None, "cpu | cuda (default: cuda if available)")
    dtype: Literal["float32", "float16", "bfloat16"] | None = option(
        None, "model dtype (default: float16 on cuda, float32 on cpu)")
    out: str | None = option(None, "run folder (default: runs/<world>-<hash of settings>)")
    seed: int | None = option(None, "selection and per-video generation seed (default 0)")
    batch_size: int | None = option(None, "videos per generate call, for throughput (default 1; mini world 16); "
                                          "latency is timed apart at batch 1")
    fvd_batch_size: int = option(8, "clips per detector call")
    save_size: Literal["score", "gen"] = option("score", "store samples at the scoring size (default; FVD needs "
                                                         "nothing more) or generation size")
    no_previews: bool = option(False, "do not write previews/")
    force: list[str] | None = option(None, "regenerate (and re-time) these methods' samples even if finished, "
                                           "e.g. --force sfv:1", metavar="SPECS")
    redo_latency: bool = option(False, "re-measure every method's latency (the timing pass) without regenerating "
                                       "samples")
    timing_videos: int = option(3, "videos in the timing pass (batch 1, after one warm-up video)")
    threads: int = option(1, "torch threads of the CPU timing pass (default 1: several threads on a shared small "
                             "machine give wild numbers; 0 = torch's default); generation uses cores/--procs threads "
                             "per process")
    procs: int | None = option(None, "processes on a CPU (under torchrun, gloo), each generating and scoring its "
                                     "share of the videos with cores/K threads; the timing pass runs in the first "
                                     "alone (default: one per core, up to 4, in the mini world; 1 otherwise). "
                                     "Several GPUs: torchrun or accelerate launch")
    max_fail_frac: float | None = option(None, "stop when more than this share of the selected videos is "
                                               "undecodable or too short (default 0.05; tiny world 0.25)")

    def unet_options(self) -> list[str]:
        """``--method-option`` items with each ``--NAME-unet DIR`` as ``NAME.unet=DIR`` (after them: a flag
        wins over an option given the other way)."""
        flags = [f"{name}.unet={getattr(self, f'{name}_unet')}" for name in UNET_METHODS
                 if getattr(self, f"{name}_unet")]
        return [*self.method_option, *flags]
