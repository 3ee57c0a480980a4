"""Distillation in the mini world: the shipped distilled rows (sfv, ufogen, ladd, lcm) and the paper's
Tables 2 and 3 in miniature (`sfv-bench ablations OUT`), each cell at one or more training seeds (``--seeds``;
mean, spread and verdict by the seed rule of ``sfv_lab.seeds``).

Every run is ``sfv_train.train.train`` of a ``TrainConfig`` with ``stack="mini"`` (``distill_config``): the
paper's presets, with only what the mini size forces changed (``MINI``: steps, batch, learning rates; see
``MINI_WHY``). Each run is resumable: a finished one (its export holds the asked steps) is skipped, an
unfinished one continues from its newest checkpoint.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_text
from sfv_core.paper import TABLE2, TABLE3
from sfv_fvd.stats import interval_text
from sfv_train.config import PRESETS, TrainConfig, resume_config

from . import convergence, seeds

log = logging.getLogger(__name__)
PRESET_LAMBDA = PRESETS["sfv"]["recon_weight"]

# What the mini size forces, for every method (TrainConfig fields). The paper: batch 32, SM3 at lr
# 1e-5 (G) / 1e-4 (D), 50K steps on a 1.5B UNet; here a 2M-parameter UNet on 2 CPU cores.
MINI = {"batch_size": 8, "grad_accum": 1, "lr_g": 1e-4, "lr_d": 1e-3, "checkpoint_every": 250,
        "checkpoints_total_limit": 2, "preview_every": 0, "device": "cpu"}
STEPS = {"sfv": 800, "ufogen": 800, "ladd": 800, "lcm": 800}
MINI_WHY = ("batch 8 x 1 (one CPU process; the paper: 32 = 8 GPUs x 1 x 4), learning rates x10 (G 1e-4, "
            "D 1e-3: a 2M-parameter UNet and ~1K steps instead of 50K), everything else the preset, R1 included "
            "(sfv-train's default, approx)")


def validation_root() -> Path:
    """Held-out validation clips: c06..c10 of the mini dataset's classes and groups (made once). No stage
    trains on them (the distillations train on the dataset's c01..c05 of the training groups, the teacher,
    VAE and detector on pool clips numbered from 1000); settings are chosen on their train split."""
    from sfv_core.data.synthetic import default_dataset_root, make_synthetic
    from sfv_core.protocol import WORLDS

    base = default_dataset_root(**WORLDS["mini"].dataset)
    return make_synthetic(base.with_name(base.name + "-val-c06"), **WORLDS["mini"].dataset, first_clip=6)


def distill_config(method: str, out: Path, steps: int, world: Path | None = None, **over) -> TrainConfig:
    """A new distillation run of ``method`` in the mini world ``world`` (default: the shipped one): the preset,
    ``MINI``, then ``over`` (TrainConfig fields)."""
    return TrainConfig(**{"stack": "mini", "method": method, "out": str(out), "max_steps": steps,
                          "mini_world": str(world or ""), **MINI, **over})


def finished_steps(out: Path) -> int:
    info = Path(out) / "export" / "sfv_train.json"
    try:
        return int(json.loads(info.read_text()).get("train_steps", 0))
    except (OSError, ValueError, AttributeError):
        return 0


UNCOMPARED = ("fvd_data", "fvd_split", "fvd_every", "progress")    # may differ between the calls of one run


def _refuse_other_settings(out: Path, over: dict) -> None:
    """A started run continues only with the settings it was started with (``MINI``, sfv-train's default R1
    and ``over``): a sweep never mixes runs made under other settings into one cell."""
    held = json.loads((out / "config.json").read_text())
    asked = {"r1": TrainConfig.__dataclass_fields__["r1"].default, **MINI, **over}
    differ = [f"{k} {held[k]!r} (asked {v!r})" for k, v in asked.items()
              if k not in UNCOMPARED and k in held and held[k] != v]
    if differ:
        raise UserError(f"{out} holds a run started with other settings: {', '.join(differ)}; give another folder")


def distil(method: str, out: Path, steps: int, world: Path | None = None, progress: bool = True, **over) -> Path:
    """Train ``method`` into ``out`` in the mini world ``world`` (default: the shipped one), skipped when
    finished, resumed when started; returns the exported UNet folder."""
    from sfv_train.train import train

    out = Path(out)
    if (out / "config.json").is_file():      # finished or not: a run made under other settings is never reused
        _refuse_other_settings(out, over)
    if finished_steps(out) >= steps:
        log.info(f"{method}: {out} already holds {steps} steps, skipped")
        return out / "export" / "unet"
    quiet = {} if progress else {"progress": False}
    if (out / "config.json").is_file():
        world_field = {} if world is None else {"mini_world": str(world)}   # a resume refuses another world
        cfg = resume_config(out, max_steps=steps, **world_field, **quiet)
    else:
        if "fvd_data" not in over:      # FVD while distilling: on the validation clips, not the test split
            over = {**over, "fvd_data": str(validation_root()), "fvd_split": "train"}
        cfg = distill_config(method, out, steps, world, **over, **quiet)
    log.info(f"{method}: training {out} to step {steps} ({'resumed' if cfg.resume else 'new run'})")
    try:
        train(cfg)
    except UserError as e:
        raise UserError(f"training {method} in {out}: {e}") from None
    except FloatingPointError as e:      # diverged: one line; the checkpoints written so far are kept
        raise UserError(f"training {method} in {out}: {e}; its checkpoints are kept (rerun to resume, or try "
                        f"a lower learning rate)") from None
    return out / "export" / "unet"


def train_until(method: str, out: Path, steps: int, limit: int, **over) -> tuple[Path, convergence.Verdict | None]:
    """``distil`` to ``steps``; with ``limit``, then ``steps`` more at a time until the FVD-while-training
    curve is flat (``sfv_lab.convergence``) or the next length would pass ``limit``. Returns the exported UNet
    and the verdict on the length reached (None without ``limit``). Resumable: a rerun judges the same
    lengths from the same points and continues where the last call stopped; a run that already holds more
    steps is judged at the length it holds."""
    from sfv_train.evaluation import read_points

    target = max(steps, finished_steps(out))
    while True:
        unet = distil(method, out, target, **over)
        if not limit:
            return unet, None
        verdict = convergence.judge(read_points(Path(out) / "logs" / "metrics.jsonl"), target)
        if verdict.flat or target + steps > limit:
            return unet, verdict
        log.info(f"{method}: {out} at step {target}: {verdict.text()}; training {steps} more")
        target += steps


def score(spec: str, unet: Path | None, out: Path, **run_options) -> dict:
    """``sfv-bench run --methods SPEC`` in the mini world with ``unet`` as the method's UNet (a ``RunConfig``
    with ``run_options``, validated as the command line is); its record."""
    from bench.results import read_results
    from bench.run import cli_run
    from bench.run_config import RunConfig

    name = spec.split(":")[0]
    cfg = RunConfig(methods=[spec], out=str(out), no_previews=True, timing_videos=1,
                    method_option=[f"{name}.unet={unet}"] if unet is not None else [], **run_options)
    if cli_run(cfg) != 0:
        raise UserError(f"scoring {spec} in {out} failed (see above)")
    return next(r for r in read_results(out) if r.get("spec") == spec)


# ------------------------------------------------------------------------------------- Tables 2 and 3

BASE = "heads-both_p-1-1"      # SF-V's own setting: the SP+TE cell of Table 2 = the (-1, -1) cell of Table 3


LAMBDAS = (0.0, 0.01, 0.1, 1.0)   # the table the paper does not have: FVD against the reconstruction weight


def cells() -> dict[str, dict]:
    """Run name -> TrainConfig overrides (Table 2: heads; Table 3: P_mean, P_std; the lambda table)."""
    out = {BASE: {}}
    for heads in ("spatial", "temporal"):
        out[f"heads-{heads}"] = {"heads": heads}
    for mean, std, _ in TABLE3:
        name = f"heads-both_p{mean:g}{std:+g}"
        if (mean, std) != (-1.0, -1.0):
            out[name] = {"p_mean": mean, "p_std": std}
    for lam in LAMBDAS:
        if lam != PRESET_LAMBDA:
            out[f"lambda-{lam:g}"] = {"recon_weight": lam}
    return out


def _fmt(rec: dict) -> str:
    interval = rec.get("fvd_interval")
    return f"{rec['fvd']:.2f} {interval_text(interval)}" if interval else f"{rec['fvd']:.2f}"


def _header(recs: dict, steps: int, until_flat: int = 0) -> list[str]:
    r = next(iter(recs.values()))
    length = (f"{steps} sfv-train steps per cell, then {steps} more at a time until its FVD while training is flat "
              f"(sfv_lab/convergence.py) or {until_flat} steps," if until_flat else f"{steps} sfv-train steps per cell")
    return [f"Mini world (NOT the paper's numbers): one step after {length} from the mini "
            f"teacher ({MINI_WHY}); FVD on {r.get('n_fake', '?')} test videos with the "
            f"{r['detector']['label']}, 95% interval in brackets; {r.get('device_name', '?')}, {r.get('dtype', '?')}.",
            ""]


ROWS = ("sfv", "ladd", "ufogen")   # the shipped one-step rows: cells "row-<method>", the method's preset + MINI
# The rows' FVD while training is scored on 150 validation videos, not 32: the convergence rule compares the
# curve's fall with its interval, which at N = 32 is +-10 to 14 in this world (as wide as the whole fall).
ROW_FVD_VIDEOS = 150


def row_cells() -> dict[str, str]:
    """The shipped one-step rows as ablation cells (not in the default cells: ``--cells`` names them)."""
    return {f"row-{m}": m for m in ROWS}


def write_tables(out: Path, recs: dict, steps: int, seed_list: tuple[int, ...] = (0,), until_flat: int = 0
                 ) -> list[Path]:
    """table2.md, table3.md, table_lambda.md (unless only shipped rows ran) and, once a shipped row has run,
    table_rows.md: per cell the FVD of each training seed's run (``recs`` by run name,
    ``sfv_lab.seeds.run_name``), mean, spread and the verdict against SF-V's own setting (the rows: against
    sfv) by the seed rule of ``sfv_lab.seeds``. Returns the files written."""
    onestep = recs.get("onestep")
    ref = [f"Teacher's naive one step (onestep:1): {_fmt(onestep)}", ""] if onestep else []
    head = _header(recs, steps, until_flat) + ref

    def table(cols, rows, ref_label):
        return head + seeds.seed_table(cols, rows, recs, seed_list, ref_label, _fmt)

    t2 = table(["heads", "paper FVD (UCF-101)"], [
        (label, [label, f"{paper:.1f}"], {"SP+TE": BASE, "SP": "heads-spatial", "TE": "heads-temporal"}[label])
        for label, paper in TABLE2], "SP+TE")
    t3 = table(["P_mean", "P_std", "paper FVD (UCF-101)"], [
        (f"({mean:g}, {std:g})", [f"{mean:g}", f"{std:g}", f"{paper:.1f}"],
         BASE if (mean, std) == (-1.0, -1.0) else f"heads-both_p{mean:g}{std:+g}") for mean, std, paper in TABLE3],
        "(-1, -1)")
    tl = table(["lambda"], [
        (f"lambda {lam:g}", [f"{lam:g}{' (preset)' if lam == PRESET_LAMBDA else ''}"],
         BASE if lam == PRESET_LAMBDA else f"lambda-{lam:g}") for lam in LAMBDAS], f"lambda {PRESET_LAMBDA:g}")
    tr = table(["row"], [(f"{m}:1", [f"{m}:1"], name) for name, m in row_cells().items()], "sfv:1")
    tr += run_lines(recs, seed_list)
    ran = {n for n in {**cells(), **row_cells()} if any(seeds.run_name(n, s) in recs for s in seed_list)}
    files = {"table2.md": t2, "table3.md": t3, "table_lambda.md": tl} if ran - set(row_cells()) or not ran else {}
    if ran & set(row_cells()):
        files["table_rows.md"] = tr
    for name, lines in files.items():
        atomic_write_text(out / name, "\n".join(lines) + "\n")
    return [out / name for name in files]


def read_sweep(folder: Path) -> dict:
    """A folder's ablations.json (``cli_ablations``): steps, seeds and every run's record by run name."""
    path = Path(folder) / "ablations.json"
    if not path.is_file():
        raise UserError(f"{folder} holds no ablations.json: give folders written by sfv-bench ablations")
    return json.loads(path.read_text())


def seed_to_ship(runs: dict[int, dict | None]) -> int | None:
    """The seed whose run has the lowest FVD on the validation clips, once every seed's run (``runs``: seed ->
    its record, None while unfinished) has been scored there; None before."""
    if not runs or any(r is None or "validation" not in r for r in runs.values()):
        return None
    return min(runs, key=lambda s: runs[s]["validation"]["fvd"])


def run_lines(recs: dict, seed_list) -> list[str]:
    """table_rows.md's second table: each shipped row's run per seed with its length, convergence verdict and
    validation FVD, and per row the seed to ship (``seed_to_ship``: marked once every seed has finished)."""
    lines = ["", "Each run: steps trained, FVD while training over the last third (sfv_lab/convergence.py), FVD "
             "on 150 validation videos (clips c06..c10 of the training groups; chooses the seed to ship).", "",
             "| run | steps | FVD while training | validation FVD [95%] | shipped seed |", "|---|---|---|---|---|"]
    for name, method in row_cells().items():
        runs = {s: recs[seeds.run_name(name, s)] for s in seed_list if seeds.run_name(name, s) in recs}
        best = seed_to_ship({s: recs.get(seeds.run_name(name, s)) for s in seed_list})   # every seed finished
        for s, r in runs.items():
            conv = r.get("convergence") or {}
            lines.append(f"| {method}:1 seed {s} | {r.get('train_steps', '-')} | {conv.get('text', '-')} | "
                         f"{_fmt(r['validation']) if 'validation' in r else '-'} | {'yes' if s == best else ''} |")
    return lines


def _ablation_cells(cells_arg: str | None) -> dict[str, tuple[str, dict]]:
    """Cell name -> (method, TrainConfig overrides): every table cell, or those ``--cells`` names (which may
    name the shipped rows, ``row_cells``)."""
    known = {**{n: ("sfv", over) for n, over in cells().items()},
             **{n: (m, {"fvd_videos": ROW_FVD_VIDEOS}) for n, m in row_cells().items()}}
    if not cells_arg:
        return {n: known[n] for n in cells()}
    names = cells_arg.split(",")
    bad = [n for n in names if n not in known]
    if bad:
        raise UserError(f"unknown ablation cell(s) {', '.join(bad)}; valid: {', '.join(known)}")
    return {n: known[n] for n in names}


def cli_ablations(args) -> int:
    """``sfv-bench ablations OUT``: every cell of Tables 2 and 3 (and the lambda table; the shipped rows when
    ``--cells`` names them) as a short sfv-train run per training seed, scored alike. The tables are
    rewritten after each run, so an interrupted sweep keeps what finished; a rerun resumes."""
    out = Path(args.out)
    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    todo = _ablation_cells(args.cells)
    until_flat = getattr(args, "until_flat", 0) or 0
    if until_flat and until_flat < args.steps:
        raise UserError(f"--until-flat {until_flat} must be at least --steps {args.steps} (or 0: a fixed length)")
    seed_list = seeds.parse_seeds("0" if getattr(args, "seeds", None) is None else args.seeds)
    n = args.num_videos
    if n is not None and n < 4:
        raise UserError("-n must be >= 4 (an FVD interval needs a few videos)")
    flags = {"num_videos": n} if n else {}
    sub = f"score-n{n}" if n else "score"      # scores at another N go to their own run folders
    t0, recs = time.time(), {}
    recs["onestep"] = score("onestep:1", None, out / sub / "onestep", **flags)
    for seed in seed_list:                     # seed by seed: a whole table at one seed finishes first
        for name, (method, over) in todo.items():
            run = seeds.run_name(name, seed)
            seeded = {**over, "seed": seed} if seed else over     # seed 0 is TrainConfig's default
            unet, verdict = train_until(method, out / "runs" / run, args.steps, until_flat, **seeded)
            recs[run] = score(f"{method}:1", unet, out / sub / run, **flags)
            recs[run]["train_steps"] = finished_steps(out / "runs" / run)
            if verdict is not None:
                recs[run]["convergence"] = verdict.to_dict()
            if name in row_cells():        # the seed to ship is chosen on validation clips, never the test split
                recs[run]["validation"] = score(f"{method}:1", unet, out / "validation-n150" / run,
                                                world="mini", data=str(validation_root()), split="train",
                                                num_videos=150)
            write_tables(out, recs, args.steps, seed_list, until_flat)
            atomic_write_text(out / "ablations.json", json.dumps(
                {"steps": args.steps, "until_flat": until_flat, "seeds": list(seed_list),
                 "seconds": round(time.time() - t0, 1), "cells": recs}, indent=1, default=str) + "\n")
    written = write_tables(out, recs, args.steps, seed_list, until_flat)
    print("\n".join(p.read_text() for p in written))
    log.info(f"wrote {', '.join(map(str, written))} ({(time.time() - t0) / 60:.1f} min this call)")
    return 0


def ship_unet(export_unet: Path, world: Path, name: str) -> Path:
    """Copy a distilled UNet (fp16) into the world's unets/<name>/."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel

    dst = world / "unets" / name
    if dst.exists():
        shutil.rmtree(dst)
    UNetSpatioTemporalConditionModel.from_pretrained(export_unet).to(torch.float16).save_pretrained(dst)
    return dst
