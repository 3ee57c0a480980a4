"""The mini world's distillation driver (sfv_lab.distill): the training configurations, the ablation cells of
Tables 2 and 3, and the tables written beside the paper's numbers."""
from __future__ import annotations

import json
import os
from pathlib import Path

from sfv_core.paper import TABLE2, TABLE3
from sfv_lab.distill import BASE, LAMBDAS, MINI, PRESET_LAMBDA, cells, distill_config, write_tables
from sfv_train.config import PRESETS, TrainConfig


def test_distill_config_is_the_preset_plus_what_the_size_forces(tmp_path):
    """The configuration equals what `sfv-train` parses from the same options (the command line it replaces)."""
    from bench.cli import build_train_parser

    cfg = distill_config("sfv", tmp_path / "r", 300, heads="spatial", p_mean=0.0)
    assert (cfg.stack, cfg.method, cfg.max_steps, cfg.out, cfg.mini_world) == ("mini", "sfv", 300, str(tmp_path / "r"), "")
    assert (cfg.heads, cfg.p_mean) == ("spatial", 0.0)
    # R1 is not a mini setting: the runs use sfv-train's default, as MINI_WHY says
    assert {k: getattr(cfg, k) for k in MINI} == MINI and "r1" not in MINI and cfg.r1 == TrainConfig().r1 == "approx"
    argv = ["--stack", "mini", "--method", "sfv", "--out", str(tmp_path / "r"), "--max-steps", "300",
            "--heads", "spatial", "--p-mean", "0.0", *(a for k, v in MINI.items() for a in (f"--{k.replace('_', '-')}",
                                                                                          str(v)))]
    parsed = vars(build_train_parser().parse_args(argv))
    assert cfg == TrainConfig(**{k: v for k, v in parsed.items() if k in TrainConfig.__dataclass_fields__})
    assert cfg.resolved().recon_weight == PRESETS["sfv"]["recon_weight"]
    world = distill_config("ladd", tmp_path / "r", 5, world=tmp_path / "w")
    assert world.mini_world == str(tmp_path / "w") and world.method == "ladd"


def test_cells_cover_tables_2_and_3_and_the_lambda_table_once():
    c = cells()
    assert c[BASE] == {} and c["heads-spatial"] == {"heads": "spatial"} and c["heads-temporal"] == {"heads": "temporal"}
    table3 = [v for v in c.values() if "p_mean" in v]
    assert len(table3) == len(TABLE3) - 1                                        # (-1, -1) is the base cell
    # lambda: the preset's 0.01 (per-element pseudo-Huber) is the base cell; the others change that one field
    # (recon_weight, the option --lambda)
    assert PRESET_LAMBDA == PRESETS["sfv"]["recon_weight"] == 0.01 and LAMBDAS == (0.0, 0.01, 0.1, 1.0)
    assert {k: v for k, v in c.items() if "recon_weight" in v} == {"lambda-0": {"recon_weight": 0.0},
                                                                     "lambda-0.1": {"recon_weight": 0.1},
                                                                     "lambda-1": {"recon_weight": 1.0}}
    assert len(c) == 3 + len(TABLE3) - 1 + 3
    assert all(len(v) <= 2 for v in c.values())                                  # one setting changed per cell
    cfg = distill_config("sfv", Path("r"), 5, **c["lambda-0.1"]).resolved()
    assert cfg.recon_weight == 0.1 and cfg.recon_reduction == PRESETS["sfv"]["recon_reduction"] == "element"


def test_tables_carry_paper_numbers_intervals_and_missing_cells(tmp_path):
    rec = {"fvd": 12.5, "fvd_interval": [10.0, 15.0], "n_fake": 64, "detector": {"label": "mini detector"},
           "device_name": "CPU", "dtype": "float32"}
    p2, p3, _ = write_tables(Path(tmp_path), {BASE: rec, "onestep": {**rec, "fvd": 18.0}}, 300)
    t2, t3 = p2.read_text(), p3.read_text()
    assert "NOT the paper's numbers" in t2 and "300 sfv-train steps" in t2 and "onestep:1): 18.00" in t2
    # one seed: its FVD, mean, spread (no sd from one run), the verdict column (under 3 seeds: no claim)
    assert "| heads | paper FVD (UCF-101) | seed 0 | mean | min..max | sd | vs SP+TE |" in t2
    assert f"| SP+TE | {TABLE2[0][1]:.1f} | 12.50 [10.00, 15.00] | 12.50 | 12.50..12.50 | - | reference |" in t2
    assert "| SP | 514.7 | not run | - | - | - | - |" in t2
    assert "| -1 | -1 | 180.9 | 12.50 [10.00, 15.00] |" in t3 and t3.count("not run") == len(TABLE3) - 1
    tl = (Path(tmp_path) / "table_lambda.md").read_text()
    assert "NOT the paper's numbers" in tl and "onestep:1): 18.00" in tl
    rows = [ln for ln in tl.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert rows == ["| lambda | seed 0 | mean | min..max | sd | vs lambda 0.01 |", "| 0 | not run | - | - | - | - |",
                    "| 0.01 (preset) | 12.50 [10.00, 15.00] | 12.50 | 12.50..12.50 | - | reference |",
                    "| 0.1 | not run | - | - | - | - |", "| 1 | not run | - | - | - | - |"]
    write_tables(Path(tmp_path), {BASE: rec, "lambda-1": {**rec, "fvd": 9.0, "fvd_interval": None}}, 300)
    assert "| 1 | 9.00 | 9.00 | 9.00..9.00 | - | fewer than 3 seeds (1) |" in (Path(tmp_path) / "table_lambda.md").read_text()
    assert not (Path(tmp_path) / "table_rows.md").exists()                      # no shipped row has run


def test_tables_over_three_seeds_show_each_seed_the_spread_and_the_verdict(tmp_path):
    """Runs by name (seed 0: the cell's name, seed N: name-sN): per-seed FVDs, mean, min..max, sd, and the
    seed rule's verdict against SF-V's own setting; the shipped rows' table against sfv."""
    def rec(fvd):
        return {"fvd": fvd, "fvd_interval": [fvd - 1.0, fvd + 1.0], "n_fake": 150,
                "detector": {"label": "mini detector"}}

    recs = {"onestep": rec(68.0)}
    for name, fvds in ((BASE, (30.0, 32.0, 34.0)), ("heads-spatial", (50.0, 52.0, 54.0)),
                       ("heads-temporal", (29.0, 33.0, 33.5)), ("row-sfv", (24.0, 25.0, 26.0)),
                       ("row-ladd", (31.0, 35.0, 30.0))):
        recs.update({(name if s == 0 else f"{name}-s{s}"): rec(f) for s, f in enumerate(fvds)})
    assert [p.name for p in write_tables(Path(tmp_path), recs, 400, (0, 1, 2))] == [
        "table2.md", "table3.md", "table_lambda.md", "table_rows.md"]
    p2 = Path(tmp_path) / "table2.md"
    t2 = p2.read_text()
    assert "| heads | paper FVD (UCF-101) | seed 0 | seed 1 | seed 2 | mean | min..max | sd | vs SP+TE |" in t2
    assert ("| SP | 514.7 | 50.00 [49.00, 51.00] | 52.00 [51.00, 53.00] | 54.00 [53.00, 55.00] | 52.00 "
            "| 50.00..54.00 | 2.00 | SP+TE beats SP |") in t2
    assert "| 32.00 | 30.00..34.00 | 2.00 | reference |" in t2
    assert t2.rstrip().endswith("| 31.83 | 29.00..33.50 | 2.47 | not separable |")       # TE, overlapping
    rows = (Path(tmp_path) / "table_rows.md").read_text()
    assert "| row | seed 0 | seed 1 | seed 2 | mean | min..max | sd | vs sfv:1 |" in rows
    assert "| ladd:1 | 31.00 [30.00, 32.00] |" in rows and "| sfv:1 beats ladd:1 |" in rows   # every seed apart
    assert "| ufogen:1 | not run | not run | not run | - | - | - | - |" in rows
    # a folder of the shipped rows only gets the rows' table, not tables of cells it never ran
    rows_only = {k: v for k, v in recs.items() if k.startswith("row-") or k == "onestep"}
    assert [p.name for p in write_tables(Path(tmp_path) / "rows", rows_only, 800, (0, 1, 2))] == ["table_rows.md"]


def test_ablations_command_trains_each_cell_and_scores_at_the_asked_n(tmp_path, monkeypatch, capsys):
    """`sfv-bench ablations OUT --steps S --cells C -n N`: one sfv-train run per cell (resumable folder),
    scored at N in its own folder (another N never lands in the same run folder)."""
    import argparse

    import pytest

    import sfv_lab.distill as d
    from sfv_core.errors import UserError

    calls = []
    rec = {"fvd": 12.5, "fvd_interval": [10.0, 15.0], "n_fake": 150, "detector": {"label": "mini detector"}}
    monkeypatch.setattr(d, "distil", lambda m, out, steps, **over: calls.append(("distil", m, out.name, steps, over))
                        or out / "export" / "unet")
    monkeypatch.setattr(d, "score", lambda spec, unet, out, **flags: calls.append(("score", spec, out, flags)) or dict(rec))
    args = argparse.Namespace(out=str(tmp_path), steps=40, cells="heads-spatial", num_videos=150)
    assert d.cli_ablations(args) == 0
    assert calls[0] == ("score", "onestep:1", tmp_path / "score-n150" / "onestep", {"num_videos": 150})
    assert calls[1] == ("distil", "sfv", "heads-spatial", 40, {"heads": "spatial"})
    assert calls[2] == ("score", "sfv:1", tmp_path / "score-n150" / "heads-spatial", {"num_videos": 150})
    assert len(calls) == 3 and (tmp_path / "table2.md").is_file()
    with pytest.raises(UserError, match="-n must be >= 4"):
        d.cli_ablations(argparse.Namespace(out=str(tmp_path), steps=40, cells=None, num_videos=2))
    with pytest.raises(UserError, match="unknown ablation cell.*heads-bogus.*valid: heads-both_p-1-1"):
        d.cli_ablations(argparse.Namespace(out=str(tmp_path), steps=40, cells="heads-bogus", num_videos=None))
    # --seeds: seed by seed; seed 0 keeps the cell's folder (finished runs reused), seed N trains name-sN at
    # seed N; the shipped rows by name, each with its own method
    calls.clear()
    args = argparse.Namespace(out=str(tmp_path), steps=40, cells="heads-spatial,row-ladd", num_videos=None,
                              seeds="0,1,2")
    monkeypatch.setattr(d, "validation_root", lambda: tmp_path / "val")
    assert d.cli_ablations(args) == 0
    validated = [c for c in calls if c[0] == "score" and c[2].parent.name == "validation-n150"]
    calls = [c for c in calls if c not in validated]
    # only the shipped rows are scored on the validation clips too (their seed to ship is chosen there)
    assert [c[2].name for c in validated] == ["row-ladd", "row-ladd-s1", "row-ladd-s2"]
    assert validated[0][3] == {"world": "mini", "data": str(tmp_path / "val"), "split": "train", "num_videos": 150}
    trained = [c[1:] for c in calls if c[0] == "distil"]
    assert trained == [("sfv", "heads-spatial", 40, {"heads": "spatial"}), ("ladd", "row-ladd", 40, {"fvd_videos": 150}),
                       ("sfv", "heads-spatial-s1", 40, {"heads": "spatial", "seed": 1}),
                       ("ladd", "row-ladd-s1", 40, {"fvd_videos": 150, "seed": 1}),
                       ("sfv", "heads-spatial-s2", 40, {"heads": "spatial", "seed": 2}),
                       ("ladd", "row-ladd-s2", 40, {"fvd_videos": 150, "seed": 2})]
    scored = [(c[1], c[2].name) for c in calls if c[0] == "score"][1:]
    assert scored == [("sfv:1" if m == "sfv" else "ladd:1", name) for m, name, _, _ in trained]
    stored = json.loads((tmp_path / "ablations.json").read_text())
    assert stored["seeds"] == [0, 1, 2] and set(stored["cells"]) == {"onestep", *(t[1] for t in trained)}
    assert "| seed 0 | seed 1 | seed 2 |" in (tmp_path / "table2.md").read_text()
    assert (tmp_path / "table_rows.md").is_file()
    args.seeds = "0,x"
    with pytest.raises(UserError, match="--seeds"):
        d.cli_ablations(args)


def test_ablations_command_line_takes_seeds():
    from bench.cli import build_parser

    args = build_parser().parse_args(["ablations", "OUT", "--seeds", "0,1,2"])
    assert (args.seeds, args.cells) == ("0,1,2", None)
    assert build_parser().parse_args(["ablations", "OUT"]).seeds == "0"
    assert build_parser().parse_args(["study", "OUT", "--seeds", "1"]).seeds == "1"


def test_distil_scores_fvd_while_training_on_the_validation_clips(tmp_path, monkeypatch):
    """No fvd_data given: fvd_data is the validation set, fvd_split train; given: kept; a started run resumes
    with its own options (its config.json) in the world it is given; a finished one is not trained again.
    Training is called with a TrainConfig (no command line, no environment variable)."""
    import json

    import pytest

    import sfv_lab.distill as d
    import sfv_train.train
    from sfv_core.errors import UserError

    cfgs = []
    monkeypatch.setattr(sfv_train.train, "train", lambda cfg: cfgs.append(cfg))
    monkeypatch.setattr(d, "validation_root", lambda: tmp_path / "val")
    monkeypatch.delenv("SFV_MINI_WORLD", raising=False)
    d.distil("sfv", tmp_path / "a", 20, heads="spatial")
    d.distil("sfv", tmp_path / "b", 20, world=tmp_path / "w", progress=False, fvd_data="elsewhere", fvd_split="test")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text(json.dumps({"method": "ladd", "heads": "temporal", "max_steps": 5}))
    d.distil("sfv", tmp_path / "c", 20, world=tmp_path / "w")
    (tmp_path / "e" / "export").mkdir(parents=True)
    (tmp_path / "e" / "export" / "sfv_train.json").write_text(json.dumps({"train_steps": 20}))
    assert d.distil("sfv", tmp_path / "e", 20) == tmp_path / "e" / "export" / "unet"
    a, b, c = cfgs
    assert (a.fvd_data, a.fvd_split, a.heads, a.stack, a.mini_world) == (str(tmp_path / "val"), "train", "spatial",
                                                                         "mini", "")
    assert (b.fvd_data, b.fvd_split, b.mini_world, b.progress) == ("elsewhere", "test", str(tmp_path / "w"), False)
    assert (c.resume, c.out, c.max_steps, c.method, c.heads, c.mini_world) == (
        "latest", str(tmp_path / "c"), 20, "ladd", "temporal", str(tmp_path / "w"))
    assert "SFV_MINI_WORLD" not in os.environ
    for error in (UserError("--resume: another configuration"), FloatingPointError("non-finite loss at step 3")):
        monkeypatch.setattr(sfv_train.train, "train", lambda cfg: (_ for _ in ()).throw(error))
        with pytest.raises(UserError, match=f"training sfv in {tmp_path / 'f'}: {error}"):   # one line, the run named
            d.distil("sfv", tmp_path / "f", 20)


def test_score_passes_the_run_flags_to_sfv_bench_run(tmp_path, monkeypatch):
    """study's flags (world mini, the validation data, split train, N) are `sfv-bench run` options, given as a
    RunConfig (no command line)."""
    import sfv_lab.distill as d
    import bench.results
    import bench.run

    seen = []
    monkeypatch.setattr(bench.run, "cli_run", lambda args: seen.append(args) or 0)
    monkeypatch.setattr(bench.results, "read_results", lambda out: [{"spec": "x:1"}, {"spec": "sfv:1", "fvd": 3.0}])
    rec = d.score("sfv:1", tmp_path / "unet", tmp_path / "s", world="mini", data=str(tmp_path / "val"),
                  split="train", num_videos=8)
    (args,) = seen
    from bench.run_config import RunConfig

    assert isinstance(args, RunConfig) and rec == {"spec": "sfv:1", "fvd": 3.0}
    assert (args.world, args.data, args.split, args.num_videos, args.out) == ("mini", str(tmp_path / "val"), "train", 8,
                                                                               str(tmp_path / "s"))
    assert args.methods == ["sfv:1"] and args.method_option == [f"sfv.unet={tmp_path / 'unet'}"]


def test_redistil_replaces_only_the_named_rows_and_keeps_the_shipped_record(tmp_path, monkeypatch, caplog):
    """`build-mini OUT --redistil sfv`: OUT/world is a copy of the shipped world (less its build records) with
    unets/sfv from a new distill stage; OUT/build.json is the shipped record with distill-sfv replaced; the
    quality figures change only for sfv; a second call skips the finished stage; Build.stage records a
    stage finished elsewhere (done.json) that its record lacks; the world reaches the distill stage as an argument
    (no environment variable is set). Training and the shipped world are fakes."""
    import hashlib
    import json

    import pytest

    import methods.models.mini
    import sfv_lab.mini as mini
    import sfv_lab.ship as ship
    from sfv_core.errors import UserError

    shipped = tmp_path / "shipped"
    for rel, text in {"stack/unet/w.bin": "teacher", "unets/sfv/w.bin": "old sfv", "unets/ladd/w.bin": "ladd",
                      "done.json": "{}", "manifest.json": "{}"}.items():
        (shipped / rel).parent.mkdir(parents=True, exist_ok=True)
        (shipped / rel).write_text(text)
    stages = {"teacher": {"seconds": 100.0}, "distill-sfv": {"seconds": 50.0, "fvd": 99.0},
              "distill-ladd": {"seconds": 40.0, "fvd": 77.0}}
    (shipped / "build.json").write_text(json.dumps({"command": "sfv-bench build-mini", "stages": stages}))
    checked, ran = [], []

    def distill_stage(b, folder, method, world):
        ran.append(method)
        (world / "unets" / method / "w.bin").write_text(f"new {method}")
        (folder / "run").mkdir(parents=True)
        (folder / "run" / "fvd_best.json").write_text(json.dumps({"fvd": 5.0, "step": 8}))
        (folder / "run" / "fvd_vs_step.png").write_bytes(b"\x89PNG fake")
        return {"fvd": 5.0}

    monkeypatch.setattr(ship, "SHIPPED", shipped)
    monkeypatch.setattr(ship, "distill_stage", distill_stage)
    monkeypatch.setattr(mini, "git_commit", lambda: "abc")
    monkeypatch.setattr(methods.models.mini, "verified", lambda part, world=None: checked.append((part, world)))
    monkeypatch.delenv("SFV_MINI_WORLD", raising=False)
    out = tmp_path / "out"
    caplog.set_level("INFO", logger="sfv_lab")
    world = ship.redistil(out, ["sfv"])
    assert world == out / "world" and checked == [("stack", shipped), ("detector", shipped)] and ran == ["sfv"]
    assert "SFV_MINI_WORLD" not in os.environ
    assert (world / "unets" / "sfv" / "w.bin").read_text() == "new sfv"
    assert (world / "unets" / "ladd" / "w.bin").read_text() == "ladd"
    assert (world / "stack" / "unet" / "w.bin").read_text() == "teacher"
    assert not (world / "build.json").exists() and not (world / "done.json").exists()
    files = json.loads((world / "manifest.json").read_text())["files"]
    assert files["unets/sfv/w.bin"] == hashlib.sha256(b"new sfv").hexdigest() and "unets/ladd/w.bin" in files
    rec = json.loads((out / "build.json").read_text())
    assert {k: rec["stages"][k] for k in ("teacher", "distill-ladd")} == {k: stages[k] for k in ("teacher",
                                                                                             "distill-ladd")}
    assert rec["stages"]["distill-sfv"]["fvd"] == 5.0 and rec["stages"]["distill-sfv"]["seconds"] < 50.0
    assert rec["redistilled"]["methods"] == ["sfv"]
    repo = json.loads((Path(mini.__file__).resolve().parents[1] / "results" / "mini" / "quality.json").read_text())
    q = json.loads((out / "quality.json").read_text())
    assert q["distilled"]["sfv"] == {"fvd": 5.0, "step": 8}
    assert {m: v for m, v in q["distilled"].items() if m != "sfv"} == {m: v for m, v in repo["distilled"].items()
                                                                       if m != "sfv"}
    assert (out / "fvd_vs_step_sfv.png").read_bytes() == b"\x89PNG fake"
    assert json.loads((shipped / "build.json").read_text())["stages"] == stages      # no --install: untouched
    ship.redistil(out, ["sfv"])                                                      # finished: skipped
    assert ran == ["sfv"] and any("[distill-sfv] done" in r.message and "skipped" in r.message for r in caplog.records)
    with pytest.raises(UserError, match="--redistil takes a comma list"):
        ship.redistil(out, ["sfv", "dmd"])
    # Build.stage: a stage finished by another call, absent from this record, is filled from its done.json
    b = mini.Build(out, "cpu", 1, 1.0, False)
    del b.record["stages"]["distill-sfv"]
    b.stage("distill-sfv", lambda f: pytest.fail("a finished stage ran again"))
    done = json.loads((out / "distill-sfv" / "done.json").read_text())
    assert b.record["stages"]["distill-sfv"] == {**done, "seconds": round(done["seconds"], 1)}


def test_until_flat_extends_a_run_until_its_fvd_curve_is_flat_and_a_rerun_ends_at_the_same_length(
        tmp_path, monkeypatch):
    """train_until: --steps more at a time while the curve still falls; stops when flat or at the limit; a rerun
    over the same points reaches the same length without training again."""
    import sfv_lab.distill as d

    curve = {s: 100.0 - 0.05 * min(s, 1200) for s in range(100, 3300, 100)}      # falls until 1200, then flat
    trained = {}

    def distil(method, run, steps, **over):          # appends the FVD points of the steps not trained yet
        done = max(trained.get(run.name, [0]))
        if steps > done:
            trained.setdefault(run.name, []).append(steps)
            (run / "logs").mkdir(parents=True, exist_ok=True)
            with open(run / "logs" / "metrics.jsonl", "a") as f:
                for s in range(done + 100, steps + 1, 100):
                    f.write(json.dumps({"step": s, "fvd": curve[s], "fvd_lo": curve[s] - 3, "fvd_hi": curve[s] + 3})
                            + "\n")
        return run / "export" / "unet"

    monkeypatch.setattr(d, "distil", distil)
    unet, verdict = d.train_until("sfv", tmp_path / "run", 800, 3200)
    assert trained["run"] == [800, 1600, 2400] and verdict.flat and verdict.upto == 2400
    assert d.train_until("sfv", tmp_path / "run", 800, 3200)[1] == verdict and trained["run"] == [800, 1600, 2400]
    _, capped = d.train_until("sfv", tmp_path / "capped", 800, 1000)
    assert trained["capped"] == [800] and capped.upto == 800 and not capped.flat   # never past the limit
    assert d.train_until("sfv", tmp_path / "fixed", 800, 0)[1] is None             # no limit: --steps, no verdict


def test_a_started_run_continues_only_with_the_settings_it_was_started_with(tmp_path, monkeypatch):
    """A folder trained under other settings (lazy R1, another lambda) is refused in one line naming them, so a
    sweep never mixes it into a cell; the FVD-while-training options may differ between calls."""
    import pytest

    import sfv_lab.distill as d
    import sfv_train.train
    from sfv_core.errors import UserError

    monkeypatch.setattr(sfv_train.train, "train", lambda cfg: None)
    run = tmp_path / "run"
    run.mkdir()
    held = {"method": "sfv", **d.MINI, "r1": "lazy", "recon_weight": 0.1, "fvd_every": 100, "max_steps": 800}
    (run / "config.json").write_text(json.dumps(held))
    with pytest.raises(UserError, match=r"other settings: r1 'lazy' \(asked 'approx'\); give another folder"):
        d.distil("sfv", run, 1600)
    with pytest.raises(UserError, match=r"recon_weight 0.1 \(asked 0.0\)"):
        d.distil("sfv", run, 1600, r1="lazy", recon_weight=0.0)
    d.distil("sfv", run, 1600, r1="lazy", recon_weight=0.1, fvd_every=200)
    (run / "export").mkdir()                                # finished: still refused, never reused
    (run / "export" / "sfv_train.json").write_text(json.dumps({"train_steps": 1600}))
    with pytest.raises(UserError, match="other settings: r1 'lazy'"):
        d.distil("sfv", run, 800)


def test_ablations_until_flat_records_each_runs_length_verdict_and_the_seed_chosen_on_validation(
        tmp_path, monkeypatch):
    import argparse

    import pytest

    import sfv_lab.distill as d
    from sfv_core.errors import UserError
    from sfv_lab.convergence import Verdict

    val_fvd = {"row-sfv": 30.0, "row-sfv-s1": 20.0, "row-sfv-s2": 25.0}
    monkeypatch.setattr(d, "validation_root", lambda: tmp_path / "val")
    monkeypatch.setattr(d, "train_until", lambda m, out, steps, limit, **over: (
        out / "export" / "unet", Verdict(True, 1600, 3, 0.5, 2.0)))
    monkeypatch.setattr(d, "finished_steps", lambda out: 1600)

    def score(spec, unet, out, **flags):
        fvd = val_fvd[out.name] if out.parent.name == "validation-n150" else 40.0
        return {"fvd": fvd, "fvd_interval": [fvd - 3, fvd + 3], "n_fake": 150, "detector": {"label": "mini"}}

    monkeypatch.setattr(d, "score", score)
    args = argparse.Namespace(out=str(tmp_path), steps=800, cells="row-sfv", num_videos=150, seeds="0,1,2",
                              until_flat=3200)
    assert d.cli_ablations(args) == 0
    stored = json.loads((tmp_path / "ablations.json").read_text())
    assert stored["until_flat"] == 3200 and stored["cells"]["row-sfv-s1"]["train_steps"] == 1600
    assert stored["cells"]["row-sfv"]["convergence"]["flat"] is True
    rows = (tmp_path / "table_rows.md").read_text()
    assert ("| sfv:1 seed 1 | 1600 | flat: fall 0.50 over steps > 1066, half-width 2.00 | 20.00 [17.00, 23.00] "
            "| yes |") in rows
    assert rows.count("| yes |") == 1 and "then 800 more at a time until" in rows
    args.until_flat = 400
    with pytest.raises(UserError, match="--until-flat 400 must be at least --steps 800"):
        d.cli_ablations(args)
