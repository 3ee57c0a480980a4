"""`sfv-bench study OUT` (sfv_lab.study): the controlled runs it makes, their overrides and FVD-while-training
on the validation clips, the scores on the validation set's train split, the report files, refusals and
resume; with sfv-train and `sfv-bench run` replaced (no training here)."""
from __future__ import annotations

import argparse
import json
import types

import pytest

import sfv_lab.study as study
from bench.cli import main
from sfv_core.errors import UserError

REC = {"fvd": 12.5, "fvd_interval": [10.0, 15.0]}
# three logged training steps and one FVD point: the probes' means over the last 100 steps
TRAIN_LINES = [{"step": s, "g_loss": 1.0, "d_loss": 2.0, "acc_real": a, "acc_fake": 0.5, "gn_ratio": r, "gn_cos": -0.5,
                "gn_adv": 0.1, "gn_rec": 0.1 / r, "logit_abs_real": 0.25, "logit_abs_fake": 0.75,
                "acc_real_spatial": a, "acc_real_sig0.1-1": a}
               for s, a, r in ((1, 0.25, 1.0), (2, 0.5, 2.0), (3, 0.75, 3.0))]


@pytest.fixture
def fake_world(tmp_path, monkeypatch):
    """distil / score / validation_root replaced; distil writes a run folder with a metrics.jsonl. Time is a
    clock that advances 10 s a reading, so the seconds per run are exact."""
    calls = {"distil": [], "score": []}
    val = tmp_path / "val"

    def distil(method, out, steps, **over):
        calls["distil"].append((method, out, steps, over))
        (out / "logs").mkdir(parents=True, exist_ok=True)
        lines = TRAIN_LINES + [{"step": 3, "fvd": 40.0, "fvd_lo": 30.0, "fvd_hi": 50.0}]
        (out / "logs" / "metrics.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))
        return out / "export" / "unet"

    def score(spec, unet, out, **flags):
        calls["score"].append((spec, unet, out, flags))
        return dict(REC, spec=spec)

    clock = iter(range(0, 10**6, 10))
    monkeypatch.setattr(study, "distil", distil)
    monkeypatch.setattr(study, "score", score)
    monkeypatch.setattr(study, "validation_root", lambda: val)
    monkeypatch.setattr(study, "time", types.SimpleNamespace(time=lambda: float(next(clock))))
    return calls, val


def _args(out, runs="sfv-paper,ladd-videos", steps=16, n=8):
    return argparse.Namespace(out=str(out), runs=runs, steps=steps, num_videos=n, install=False)


def test_study_runs_what_it_names_and_scores_on_the_validation_train_split(fake_world, tmp_path, capsys):
    calls, val = fake_world
    out = tmp_path / "study"
    assert study.cli_study(_args(out)) == 0
    fvd = {"fvd_data": str(val), "fvd_split": "train", "fvd_every": 2}           # steps 16 // 8
    # sfv-paper: SF-V read literally (frames norm, whole-video pseudo-Huber, lambda 0.1)
    assert study.LITERAL == {"d_norm": "frames", "recon_reduction": "video", "recon_weight": 0.1}
    assert calls["distil"] == [("sfv", out / "runs" / "sfv-paper", 16, {**study.LITERAL, **fvd}),
                               ("ladd", out / "runs" / "ladd-videos", 16, {"d_norm": "videos", **fvd})]
    flags = {"world": "mini", "data": str(val), "split": "train", "num_videos": 8}
    assert calls["score"] == [("onestep:1", None, out / "score" / "onestep", flags)] + [
        (f"{m}:1", out / "runs" / name / "export" / "unet", out / "score" / name, flags)
        for m, name in (("sfv", "sfv-paper"), ("ladd", "ladd-videos"))]
    state = json.loads((out / "study.json").read_text())
    assert (state["steps"], state["n"]) == (16, 8)
    assert set(state["runs"]) == {"onestep", "sfv-paper", "ladd-videos"}
    assert state["seconds"] == {"sfv-paper": 10.0, "ladd-videos": 10.0}
    probes = state["runs"]["sfv-paper"]["probes"]
    assert probes == pytest.approx({"gn_ratio": 2.0, "gn_cos": -0.5, "gn_adv": 0.1, "d_loss": 2.0, "acc_real": 0.5,
                                    "gn_rec": (0.1 + 0.05 + 0.1 / 3) / 3, "acc_fake": 0.5, "acc_real_spatial": 0.5,
                                    "logit_abs_real": 0.25, "logit_abs_fake": 0.75})
    assert state["runs"]["ladd-videos"]["fvd_interval"] == [10.0, 15.0]
    md = (out / "study.md").read_text()
    assert "NOT the paper's numbers" in md and "16 steps" in md and "8 held-out validation videos" in md
    assert "Teacher's naive one step (onestep:1) on the same videos: 12.50 [10.00, 15.00]" in md
    assert (f"| sfv-paper | {study.RUNS['sfv-paper'][2]} | 12.50 [10.00, 15.00] | 2 | -0.50 | 0.50 / 0.50 "
            f"| 0.25 / 0.75 | 0.2 |") in md
    assert md.count("| ladd-videos |") == 1 and "| onestep |" not in md
    assert md.index("| sfv-paper |") < md.index("| ladd-videos |")
    assert (out / "study_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert md in capsys.readouterr().out


def test_study_curves_and_probe_summary_read_metrics(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    lines = TRAIN_LINES + [{"step": 2, "fvd": 40.0}, {"step": 3, "fvd": 30.0}]
    (run / "logs" / "metrics.jsonl").write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    c = study.curves(run)
    assert c == {"fvd": [(2, 40.0), (3, 30.0)], "ratio": [(1, 1.0), (2, 2.0), (3, 3.0)],
                 "acc": [(1, 0.375), (2, 0.5), (3, 0.625)]}
    assert study.probe_summary(run, 2)["gn_ratio"] == pytest.approx(2.5)             # steps 2 and 3 only
    assert "acc_fake_temporal" not in study.probe_summary(run, 100)                   # never logged: absent


def test_study_is_resumable_and_keeps_the_seconds(fake_world, tmp_path):
    """Each run's seconds live in runs/<name>/study_seconds.json, summed over the calls that ran it; a call
    keeps the earlier calls' runs (study.json, study.md) beside its own."""
    calls, _ = fake_world
    out = tmp_path / "study"

    def clock(name):
        return json.loads((out / "runs" / name / "study_seconds.json").read_text())["seconds"]

    assert study.cli_study(_args(out, runs="sfv-videos")) == 0
    assert json.loads((out / "study.json").read_text())["seconds"] == {"sfv-videos": 10.0}
    assert study.cli_study(_args(out, runs="sfv-videos,sfv-recon-off")) == 0
    assert json.loads((out / "study.json").read_text())["seconds"] == {"sfv-videos": 20.0, "sfv-recon-off": 10.0}
    assert (clock("sfv-videos"), clock("sfv-recon-off")) == (20.0, 10.0)
    # a call naming only sfv-recon-off: sfv-videos stays, with its row and its 20 s
    assert study.cli_study(_args(out, runs="sfv-recon-off")) == 0
    state = json.loads((out / "study.json").read_text())
    assert state["seconds"] == {"sfv-videos": 20.0, "sfv-recon-off": 20.0}
    assert set(state["runs"]) == {"onestep", "sfv-videos", "sfv-recon-off"}
    assert state["runs"]["sfv-videos"]["fvd_interval"] == [10.0, 15.0] and state["runs"]["sfv-videos"]["probes"]
    md = (out / "study.md").read_text()
    assert "| sfv-recon-off |" in md and "| sfv-videos | D norm videos | 12.50 [10.00, 15.00] |" in md
    assert md.rstrip().splitlines()[-1].endswith("| 0.3 |")              # sfv-recon-off: 20 s
    # VIDEO_NORM: the videos norm with the literal whole-video lambda 0.1; recon-off: LITERAL with lambda 0
    assert study.VIDEO_NORM == {"d_norm": "videos", "recon_reduction": "video", "recon_weight": 0.1}
    assert [(m, o.name, over["recon_weight"], over["d_norm"], over["recon_reduction"])
            for m, o, _, over in calls["distil"]] == [
        ("sfv", "sfv-videos", 0.1, "videos", "video"), ("sfv", "sfv-videos", 0.1, "videos", "video"),
        ("sfv", "sfv-recon-off", 0.0, "frames", "video"), ("sfv", "sfv-recon-off", 0.0, "frames", "video")]


def test_study_refuses_unknown_runs_and_tiny_settings(fake_world, tmp_path, capsys):
    calls, _ = fake_world
    out = tmp_path / "study"
    assert main(["study", str(out), "--runs", "sfv-paper,sfv-bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sfv-bench study: error: unknown study run(s) sfv-bogus")
    assert "sfv-videos" in err                                          # the valid names are listed
    for kw, msg in (({"steps": 4}, "--steps must be >= 8"), ({"n": 2}, "-n >= 4")):
        with pytest.raises(UserError, match=msg):
            study.cli_study(_args(out, **kw))
    assert calls == {"distil": [], "score": []} and not out.exists()


def test_study_command_line_defaults():
    from bench.cli import build_parser

    args = build_parser().parse_args(["study", "OUT"])
    assert (args.out, args.runs, args.steps, args.num_videos, args.install) == ("OUT", None, 400, 150, False)
    assert args.func == "sfv_lab.study:cli_study"
    # the R1 study and the limits study: --runs r1-... / lim-...
    assert study.DEFAULT_RUNS + tuple(study.R1_RUNS) + tuple(study.LIMIT_RUNS) == tuple(study.RUNS)
    for name, (method, over, what) in study.RUNS.items():
        assert method in ("sfv", "ufogen", "ladd") and over["d_norm"] in ("frames", "videos") and what, name


def test_r1_table_reproduces_the_shipped_note_with_the_seed_rule_verdict():
    """r1_table on the stored runs (results/mini/r1_study.json) gives r1_study.md's rows (mean, min..max, sd
    now from sfv_lab.seeds) plus the verdict against approx: not separable, as the note says."""
    from pathlib import Path

    mini = Path(study.__file__).resolve().parents[1] / "results" / "mini"
    stored = json.loads((mini / "r1_study.json").read_text())
    shipped = [ln for ln in (mini / "r1_study.md").read_text().splitlines() if ln.startswith("| ")]
    lines = study.r1_table(stored["runs"], stored["steps"], stored["seconds"])
    assert lines[2] == shipped[0] + " vs approx |"
    rows = lines[4:]
    assert rows == [shipped[1] + " not separable |", shipped[2] + " reference |", shipped[3] + " not separable |"]


def test_study_trains_each_run_at_each_seed_and_keeps_seed_0_names(fake_world, tmp_path):
    """--seeds 0,1,2: seed 0 keeps the run's folder (finished work reused), seed N trains name-sN with seed N;
    the r1-* runs carry their own seed; study.md gains the seeds table with the verdict column."""
    calls, _ = fake_world
    out = tmp_path / "study"
    args = _args(out, runs="sfv-element-lambda0.01,sfv-videos,r1-none-s1")
    args.seeds = "0,1,2"
    assert study.cli_study(args) == 0
    trained = [(o.name, over.get("seed")) for _, o, _, over in calls["distil"]]
    assert trained == [("sfv-element-lambda0.01", None), ("sfv-videos", None), ("r1-none-s1", 1),
                       ("sfv-element-lambda0.01-s1", 1), ("sfv-videos-s1", 1),
                       ("sfv-element-lambda0.01-s2", 2), ("sfv-videos-s2", 2)]
    assert [o.name for _, _, o, _ in calls["score"]][1:] == [name for name, _ in trained]
    state = json.loads((out / "study.json").read_text())
    assert set(state["seconds"]) == {name for name, _ in trained}
    md = (out / "study.md").read_text()
    assert "| sfv-videos-s2 | D norm videos | 12.50 [10.00, 15.00] |" in md
    seeds_part = md[md.index("## Seeds"):]
    assert ("| run | seed 0 | seed 1 | seed 2 | mean | min..max | sd | vs sfv-element-lambda0.01 |" in seeds_part)
    # every seed scored 12.50 [10.00, 15.00] in the fake: identical cells are not separable
    assert "| sfv-videos | 12.50 [10.00, 15.00] | 12.50 [10.00, 15.00] | 12.50 [10.00, 15.00] | 12.50 | 12.50..12.50 " \
           "| 0.00 | not separable |" in seeds_part
    assert "| sfv-element-lambda0.01 | " in seeds_part and "| reference |" in seeds_part
    assert "r1-none" not in seeds_part
    # a second call at seed 0 only keeps the seeded runs of the first (resume: nothing retrained by the fake's
    # skip is tested in test_distill; here the records and seconds stay)
    args.seeds, args.runs = "0", "sfv-videos"
    assert study.cli_study(args) == 0
    assert set(json.loads((out / "study.json").read_text())["runs"]) == {"onestep", *(n for n, _ in trained)}


def test_study_refuses_bad_seeds(fake_world, tmp_path):
    args = _args(tmp_path / "study")
    for bad in ("a", "-1", "1,,2"):
        args.seeds = bad
        with pytest.raises(UserError, match="--seeds"):
            study.cli_study(args)
    assert study.base_run("sfv-videos-s12") == "sfv-videos" and study.base_run("r1-exact-s0") == "r1-exact-s0"
    assert study.base_run("bogus-s1") is None and study.base_run("sfv-videos-sx") is None


def test_each_limits_run_is_the_preset_with_one_change():
    from sfv_train.config import TrainConfig

    preset = study.RUNS[study.STUDY_REFERENCE][1]
    for name, (method, over, what) in study.LIMIT_RUNS.items():
        changed = {k for k in {**preset, **over} if preset.get(k) != over.get(k)}
        assert method == "sfv" and len(changed) == 1 and changed <= set(TrainConfig.__dataclass_fields__), name
