"""Commands that make the project's own assets (the synthetic dataset, the mini world, its ablations): their
parsers (torch-free, for bench.cli) and make-synthetic."""
from __future__ import annotations


def add_make_synthetic(sub):
    p = sub.add_parser("make-synthetic", help="write a synthetic dataset in UCF-101's exact layout")
    p.add_argument("dir", help="output folder (gets UCF-101/ and ucfTrainTestlist/)")
    p.add_argument("--seed", type=int, default=0, help="the dataset's seed")
    p.add_argument("--classes", type=int, default=5, help="number of action classes")
    p.add_argument("--groups", type=int, default=7, help="groups per class (g01..)")
    p.add_argument("--clips", type=int, default=2, help="clips per group (c01..)")
    p.add_argument("--frames", type=int, default=60, help="frames per video (25 fps)")
    p.set_defaults(func="bench.assets:cli_make_synthetic")


def add_build_mini(sub):
    p = sub.add_parser("build-mini", help="train the mini world (VAE, teacher UNet, FVD detector) from scratch")
    p.add_argument("out", help="build folder (stages resume from here)")
    p.add_argument("--resume", action="store_true", help="continue unfinished stages from their checkpoints")
    p.add_argument("--install", action="store_true", help="then ship it: methods/models/mini/ and results/mini/")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every stage's steps (0.01: a smoke build)")
    p.add_argument("--redistil", default=None, metavar="M,M",
                   help="only the distill stages of these methods (sfv,ufogen,ladd,lcm), from the shipped teacher, "
                        "VAE and detector; the other rows stay the shipped ones")
    p.add_argument("--ship-rows", default=None, metavar="DIR,DIR",
                   help="ship the one-step rows these sfv-bench ablations folders trained at every seed: per row the "
                        "seed with the lowest validation FVD")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the result depends on it)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func="sfv_lab.build_command:cli_build_mini")


def add_ablations(sub):
    p = sub.add_parser("ablations", help="the paper's Tables 2 and 3 in the mini world: short sfv-train runs "
                                         "from the mini teacher, each scored with the mini FVD")
    p.add_argument("out", help="folder for the runs, their scores and table2.md / table3.md (resumable)")
    p.add_argument("--steps", type=int, default=600, help="sfv-train steps per cell")
    p.add_argument("--cells", default=None, help="only these cells, comma separated (default: all the tables' "
                                                 "cells; row-sfv,row-ladd,row-ufogen: the shipped one-step rows)")
    p.add_argument("--seeds", default="0", help="training seeds, comma separated (run folders: seed 0 the cell's "
                                                "name, seed N name-sN); the tables show each, mean, spread, verdict")
    p.add_argument("-n", "--num-videos", type=int, default=None,
                   help="test videos each cell is scored on (default: the mini world's 64; 150 = the whole test split)")
    p.add_argument("--until-flat", type=int, default=0, metavar="MAX",
                   help="train --steps more at a time until the FVD while training is flat (sfv_lab/convergence.py), "
                        "at most MAX steps (default 0: --steps exactly; meant for the rows, whose FVD while training "
                        "uses 150 videos: at the cells' 32 the interval is as wide as the fall)")
    p.set_defaults(func="sfv_lab.distill:cli_ablations")


def add_claims(sub):
    p = sub.add_parser("claims", help="the paper's claims point by point (reproduced / not / not separable) from "
                                      "the cells sfv-bench ablations trained, by the seed rule")
    p.add_argument("folders", nargs="+", help="folders written by sfv-bench ablations (their ablations.json)")
    p.add_argument("--ladder", default=None, metavar="RUN",
                   help="an sfv-bench run folder with svd:N rows scored alike: place the one-step rows on it")
    p.add_argument("--write", default=None, metavar="FILE", help="also write the Markdown to FILE")
    p.add_argument("--curves", default=None, metavar="PNG", help="plot the rows' FVD while training, every seed")
    p.set_defaults(func="sfv_lab.claims:cli_claims")


def add_study(sub):
    p = sub.add_parser("study", help="controlled sfv-train runs in the mini world (the SF-V study), scored on "
                                     "held-out validation clips, with the training probes summarised")
    p.add_argument("out", help="folder for the runs, their scores and study.md (resumable)")
    p.add_argument("--runs", default=None, help="only these runs, comma separated (default: all; see sfv_lab.study.RUNS)")
    p.add_argument("--steps", type=int, default=400, help="sfv-train steps per run")
    p.add_argument("--seeds", default="0", help="training seeds, comma separated (run folders: seed 0 the run's "
                                                "name, seed N name-sN; the r1-* runs carry their own seed)")
    p.add_argument("-n", "--num-videos", type=int, default=150, help="validation videos each run is scored on")
    p.add_argument("--install", action="store_true", help="copy study.md/.json/_curves.png into results/mini/")
    p.set_defaults(func="sfv_lab.study:cli_study")


def cli_make_synthetic(args) -> int:
    """``sfv-bench make-synthetic DIR``: write the dataset and say where and how much."""
    from sfv_core.data.clips import clip_indices, frames_needed
    from sfv_core.data.synthetic import make_synthetic
    from sfv_core.protocol import GEN

    root = make_synthetic(args.dir, seed=args.seed, classes=args.classes, groups=args.groups,
                          clips=args.clips, frames=args.frames)
    n = args.classes * args.groups * args.clips
    print(f"synthetic UCF-101 layout in {root}: {n} videos, {args.classes} classes x {args.groups} groups "
          f"x {args.clips} clips, {args.frames} frames at 25 fps, 320x240 (seed {args.seed})")
    if clip_indices(args.frames, 25.0, GEN.num_frames, GEN.fps) is None:
        need = frames_needed(25.0, GEN.num_frames, GEN.fps)
        print(f"note: the default protocol's real clip needs {need} frames; these videos are too short for it")
    return 0
