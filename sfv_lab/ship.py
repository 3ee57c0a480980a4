"""New distilled rows in the shipped mini world, into OUT/world: re-distilled from the shipped teacher
(`sfv-bench build-mini OUT --redistil M,M`) or taken from a seed sweep (`--ship-rows DIR[,DIR]`).

``--ship-rows``: for each shipped one-step row (sfv, ladd, ufogen) in the folders' ``ablations.json`` (written by
``sfv-bench ablations --cells row-...``): once every seed of the sweep has finished, the seed with the lowest
FVD on the validation clips (never the test split) is shipped. Its exported EMA UNet becomes
``world/unets/<method>`` (fp16), its FVD-while-training curve and best point the row's figures, and
build.json records where it came from (run, seed, steps, convergence verdict, validation and test FVD). The
teacher, VAE, CLIP and detector stay the shipped ones.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from methods.models.mini import SHIPPED
from sfv_core.env import resolve_device
from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_json

from . import seeds
from .distill import STEPS as DISTILL_STEPS
from .distill import read_sweep, row_cells, seed_to_ship, ship_unet
from .mini import Build, copy_tree, distill_stage, write_manifest

log = logging.getLogger(__name__)


def redistil(out: Path, methods: list[str], *, device: str = "cpu", threads: int = 0, resume: bool = False,
             install_to_repo: bool = False, progress: bool = True) -> Path:
    """``build-mini OUT --redistil sfv,ufogen,ladd``: the distill stages of ``methods`` again, from the
    SHIPPED world (its teacher, VAE, CLIP and detector, checked against its manifest), into OUT/world; the
    other stages and rows are the shipped ones and keep their build.json entries. Resumable like a build."""
    bad = [m for m in methods if m not in DISTILL_STEPS]
    if not methods or bad:
        raise UserError(f"--redistil takes a comma list of {', '.join(DISTILL_STEPS)} (got {','.join(methods)!r})")
    device = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    world = copy_shipped(out)
    b = Build(out, device, torch.get_num_threads(), 1.0, resume, progress)
    if not b.record_path.is_file():       # the shipped build's record, its distill stages to be replaced
        b.record = json.loads((SHIPPED / "build.json").read_text())
        for m in methods:
            b.record["stages"].pop(f"distill-{m}", None)
    b.record["redistilled"] = {"methods": methods, "from": "the shipped world (teacher, VAE, CLIP, detector)"}
    for m in methods:
        b.stage(f"distill-{m}", lambda f, m=m: distill_stage(b, f, m, world))
    atomic_write_json(b.record_path, b.record)
    finish_rows(out, {m: out / f"distill-{m}" / "run" for m in methods}, install_to_repo)
    return world


def copy_shipped(out: Path) -> Path:
    """OUT/world: the shipped world copied (its stack and detector checked against the manifest first), once."""
    from methods.models.mini import verified

    world = out / "world"
    if not world.is_dir():
        for part in ("stack", "detector"):
            verified(part, SHIPPED)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(SHIPPED, world, ignore=shutil.ignore_patterns("build.json", "done.json"))
    return world


def finish_rows(out: Path, runs: dict[str, Path], install_to_repo: bool) -> None:
    """After new rows went into OUT/world (OUT/build.json written): quality.json's distilled figures and the
    FVD-while-distilling plots from each row's run, the manifest, and (``install_to_repo``) the world into
    methods/models/mini/ and the figures into results/mini/."""
    repo_results = Path(__file__).resolve().parents[1] / "results" / "mini"
    earlier = out / "quality.json"        # an earlier call's rows keep their figures
    figures = json.loads((earlier if earlier.is_file() else repo_results / "quality.json").read_text())
    for m, run in runs.items():
        figures["distilled"][m] = json.loads((run / "fvd_best.json").read_text())
        shutil.copy2(run / "fvd_vs_step.png", out / f"fvd_vs_step_{m}.png")
    atomic_write_json(out / "quality.json", figures)
    write_manifest(out / "world")
    if install_to_repo:
        copy_tree(out / "world", SHIPPED)
        shutil.copy2(out / "build.json", SHIPPED / "build.json")
        for f in [out / "quality.json", *sorted(out.glob("fvd_vs_step_*.png"))]:
            shutil.copy2(f, repo_results / f.name)
        shutil.copy2(out / "build.json", repo_results / "build.json")
        log.info(f"installed the rows {', '.join(runs)} into {SHIPPED} and results/mini/")


def chosen_rows(folders: list[Path]) -> dict[str, dict]:
    """Method -> what to ship: its run folder and the record of the seed chosen on the validation clips, for
    each row whose every sweep seed has finished (a row still training is left out, with a warning)."""
    chosen = {}
    for folder in folders:
        data = read_sweep(folder)
        for cell, method in row_cells().items():
            runs = {s: data["cells"].get(seeds.run_name(cell, s)) for s in data.get("seeds", [0])}
            if not any(runs.values()):
                continue
            seed = seed_to_ship(runs)
            if seed is None:
                log.warning(f"{method}: not every seed of {sorted(runs)} in {folder} has finished: not shipped")
                continue
            rec = runs[seed]
            chosen[method] = {"run": str(Path(folder) / "runs" / seeds.run_name(cell, seed)), "seed": seed,
                              "seeds": sorted(runs), "train_steps": rec.get("train_steps"),
                              "convergence": (rec.get("convergence") or {}).get("text"),
                              "validation_fvd": rec["validation"]["fvd"], "test_fvd": rec["fvd"],
                              "test_fvd_interval": rec.get("fvd_interval")}
    return chosen


def ship_rows(out: Path, folders: list[Path], install_to_repo: bool) -> Path:
    chosen = chosen_rows(folders)
    if not chosen:
        raise UserError(f"no one-step row has finished at every seed in {', '.join(map(str, folders))}: nothing "
                        "to ship (rerun the sweep to finish it)")
    world = copy_shipped(out)
    earlier = out / "build.json"          # rows shipped into OUT by an earlier call stay, with their records
    record = json.loads((earlier if earlier.is_file() else SHIPPED / "build.json").read_text())
    for method, info in chosen.items():
        run = Path(info["run"])
        ship_unet(run / "export" / "unet", world, method)
        best = run / "fvd_best.json"
        record["stages"][f"distill-{method}"] = {**(json.loads(best.read_text()) if best.is_file() else {}),
                                                  "shipped_from": info}
        log.info(f"{method}: seed {info['seed']} of {info['seeds']} ({info['train_steps']} steps; validation FVD "
                 f"{info['validation_fvd']:.2f}, test {info['test_fvd']:.2f})")
    methods = sorted({*record.get("shipped_rows", {}).get("methods", []), *chosen})
    record["shipped_rows"] = {"methods": methods, "rule": "the seed with the lowest FVD on 150 validation "
                              "videos (clips c06..c10 of the training groups) among the sweep's seeds"}
    atomic_write_json(out / "build.json", record)
    finish_rows(out, {m: Path(i["run"]) for m, i in chosen.items()}, install_to_repo)
    return world
