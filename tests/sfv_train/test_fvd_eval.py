"""FVD while training (sfv_train.evaluation): the curve, the best step, resume
without duplicates and bit for bit, the auto rule, main process only."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.cli import build_train_parser, train_main
from sfv_train.config import RUN_ONLY, TrainConfig
from train_runs import TINY

FVD = [*TINY, "--fvd-videos", "4"]


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    """2 classes x 3 groups x 2 clips of 48 frames (a 14-frame clip at 7 fps needs 47 at 25 fps):
    fold 1 tests g01 (4 videos, the evaluation set) and trains on 8."""
    from sfv_core.data.synthetic import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("fvd-data"), seed=0, classes=2, groups=3, clips=2, frames=48)


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]


def _fvd_steps(run: Path) -> list[int]:
    return [m["step"] for m in _lines(run) if "fvd" in m]


@pytest.mark.slow
def test_fvd_every_logs_the_curve_and_the_best_step(eval_data, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="sfv_train.evaluation"):
        assert train_main(["--data", str(eval_data), *FVD, "--out", str(out), "--max-steps", "3", "--fvd-every", "2",
                           "--report-to", "tensorboard"]) == 0
    text = caplog.text
    assert "FVD while training: 4 test videos" in text and "step 2: FVD " in text and "step 3: FVD " in text
    points = [m for m in _lines(out) if "fvd" in m]
    assert [p["step"] for p in points] == [2, 3]                       # every 2 steps and at the last
    for p in points:
        assert p["fvd"] > 0 and p["fvd_lo"] <= p["fvd"] <= p["fvd_hi"] and p["fvd_n"] == 4
        assert p["fvd_detector"] == "toy" and p["fvd_seconds"] > 0
    best = json.loads((out / "fvd_best.json").read_text())
    low = min(points, key=lambda p: p["fvd"])
    assert best["step"] == low["step"] and best["fvd"] == low["fvd"]
    assert best["fvd_interval"] == [low["fvd_lo"], low["fvd_hi"]]
    assert best["checkpoint"] == f"checkpoints/step-{low['step']:06d}" and best["metric"] == "fvd4_14f_7fps_320x240"
    assert (out / "fvd_vs_step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = b"".join(f.read_bytes() for f in (out / "logs").rglob("events.out.tfevents.*"))
    assert b"eval/fvd" in events
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["fvd_every"] == 2 and cfg["fvd_detector"] == "toy" and cfg["fvd_videos"] == 4


@pytest.mark.slow
def test_resume_with_fvd_equals_a_run_without_it(eval_data, tmp_path):
    """2 steps with FVD, resumed to 4 with FVD == 4 steps without FVD: weights, export and every RNG
    state bit for bit; one FVD point per evaluated step. --export-weights raw: the generator being
    trained is the one evaluated (in eval mode, then back in train mode)."""
    plain, run = tmp_path / "plain", tmp_path / "run"
    raw = [*FVD, "--export-weights", "raw", "--checkpoints-total-limit", "0"]   # step 2 is compared too
    assert train_main(["--data", str(eval_data), *raw, "--out", str(plain), "--max-steps", "4"]) == 0
    assert train_main(["--data", str(eval_data), *raw, "--out", str(run), "--max-steps", "2",
                       "--fvd-every", "2"]) == 0
    assert train_main(["--resume", str(run), "--max-steps", "4"]) == 0
    for name in ("generator", "ema", "heads"):
        a = load_file(str(plain / "checkpoints" / "step-000004" / f"{name}.safetensors"))
        b = load_file(str(run / "checkpoints" / "step-000004" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a = load_file(str(plain / "export" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(run / "export" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for step in (2, 4):
        ra, rb = (torch.load(r / "checkpoints" / f"step-{step:06d}" / "rng-0.pt", weights_only=False)
                  for r in (plain, run))
        assert torch.equal(ra["torch"], rb["torch"]) and torch.equal(ra["train"], rb["train"])
        assert ra["python"] == rb["python"] and torch.equal(ra["numpy"][1], rb["numpy"][1])
    assert _fvd_steps(plain) == [] and not (plain / "fvd_best.json").exists()
    assert _fvd_steps(run) == [2, 4]                                   # the resume kept --fvd-every 2
    assert json.loads((run / "fvd_best.json").read_text())["evaluated_steps"] == 2
    # back to step 2: the point of step 4 leaves metrics.jsonl, fvd_best.json and the plot at start-up
    assert train_main(["--resume", str(run / "checkpoints" / "step-000002"), "--max-steps", "2"]) == 0
    assert _fvd_steps(run) == [2]
    best = json.loads((run / "fvd_best.json").read_text())
    assert (best["step"], best["last_step"], [q["step"] for q in best["points"]]) == (2, 2, [2])


def test_fvd_every_auto_rule_detector_default_and_run_only(tmp_path):
    def resolved(**kw):
        return TrainConfig(out=str(tmp_path / "o"), data=str(tmp_path), **kw).resolved()

    assert resolved(stack="mini", max_steps=50000).fvd_every == 250
    assert resolved(stack="mini", max_steps=400).fvd_every == 50
    assert resolved(stack="mini", max_steps=3).fvd_every == 1
    assert resolved(stack="tiny", max_steps=400).fvd_every == 0
    assert resolved(stack="svd", max_steps=400).fvd_every == 0
    assert resolved(stack="tiny", max_steps=400, fvd_every=7).fvd_every == 7
    assert resolved(stack="mini", max_steps=400, fvd_every=0).fvd_every == 0
    assert [resolved(stack=s).fvd_detector for s in ("mini", "tiny", "svd")] == ["mini", "toy", "stylegan-v"]
    assert resolved(stack="svd", fvd_detector="toy").fvd_detector == "toy"
    assert {"fvd_every", "fvd_videos", "fvd_detector"} <= RUN_ONLY
    a = resolved(stack="tiny")
    assert a.compared() == dataclasses.replace(a, fvd_every=3, fvd_videos=8, fvd_detector="mini").compared()
    args = build_train_parser().parse_args(["--fvd-every", "5", "--fvd-videos", "16", "--fvd-detector", "toy"])
    assert (args.fvd_every, args.fvd_videos, args.fvd_detector) == (5, 16, "toy")
    assert build_train_parser().parse_args([]).fvd_every == -1


# ------------------------------------------------------------------------ the loop's hook, no models

@dataclasses.dataclass
class _Cfg:
    out: str
    max_steps: int = 4
    fvd_every: int = 2
    resume: str = ""
    seed: int = 0
    device: str = "cpu"
    report_to: str = "none"
    progress: bool = False
    log_every: int = 1
    checkpoint_every: int = 100
    checkpoints_total_limit: int = 0
    preview_every: int = 0

    def resolved(self):
        return self

    def to_dict(self):
        return dataclasses.asdict(self)

    def compared(self):
        return {}


def _loop(can_sample: bool = True):
    from sfv_train.loop import TrainLoop

    class Loop(TrainLoop):
        def build(self):
            self.lin = torch.nn.Linear(2, 1)
            self.opt = torch.optim.SGD(self.lin.parameters(), lr=0.1)

        def train_step(self):
            loss = self.lin(torch.randn(3, 2, generator=self.gen)).pow(2).mean()
            loss.backward()
            self.opt.step()
            self.opt.zero_grad()
            self.step += 1
            return {"loss": loss.item()}

        def checkpoint_parts(self):
            return {"lin": self.lin}, {"optimizer_lin": self.opt}

        def save_checkpoint(self):
            return None

        def export(self):
            return self.out

    if can_sample:
        Loop.sample_videos = lambda self, images, seeds, conditions: None
    return Loop


@pytest.mark.parametrize("main", [True, False])
def test_evaluator_runs_on_the_main_process_only(tmp_path, monkeypatch, main):
    from accelerate import Accelerator

    import sfv_train.evaluation as ev

    made, calls, waits = [], [], []
    fvds = {2: 30.0, 4: 20.0}

    def factory(cfg, device):
        made.append(str(device))

        def evaluate(sample_fn, step):
            calls.append(step)
            torch.rand(5)                                   # an evaluation that draws: restored afterwards
            return {"fvd": fvds[step], "lo": fvds[step] - 1, "hi": fvds[step] + 1, "n": 8, "seconds": 0.1,
                    "detector": "toy", "metric": "fvd8"}
        return evaluate

    real_wait = Accelerator.wait_for_everyone
    monkeypatch.setattr(Accelerator, "wait_for_everyone", lambda self: (waits.append(1), real_wait(self))[1])
    if not main:
        monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    monkeypatch.setattr(ev, "TrainFVD", factory)
    loop = _loop()(_Cfg(out=str(tmp_path / "o")))
    loop.run()
    assert made == (["cpu"] if main else []) and calls == ([2, 4] if main else [])
    assert len(waits) >= 2                                  # every process waits after each evaluation
    if main:
        best = json.loads((tmp_path / "o" / "fvd_best.json").read_text())
        assert (best["step"], best["fvd"], best["fvd_interval"], best["checkpoint"]) == (4, 20.0, [19.0, 21.0], None)
        assert (tmp_path / "o" / "fvd_vs_step.png").is_file()


def test_evaluation_does_not_move_the_training_random_streams(tmp_path, monkeypatch):
    import sfv_train.evaluation as ev

    def losses(fvd_every):
        loop = _loop()(_Cfg(out=str(tmp_path / str(fvd_every)), fvd_every=fvd_every))
        torch.manual_seed(0)
        loop.run()
        return [h["loss"] for h in loop.history], torch.rand(3)

    def factory(cfg, device):
        torch.rand(7)
        return lambda sample_fn, step: (torch.rand(9), {"fvd": 1.0, "lo": 0.5, "hi": 1.5, "n": 4, "seconds": 0.0})[1]

    monkeypatch.setattr(ev, "TrainFVD", factory)
    (plain, after), (evaluated, after_eval) = losses(0), losses(2)
    assert plain == evaluated and torch.equal(after, after_eval)


def test_a_trainer_that_cannot_sample_is_not_evaluated(tmp_path, monkeypatch, caplog):
    import sfv_train.evaluation as ev

    monkeypatch.setattr(ev, "TrainFVD", lambda *a: pytest.fail("made an evaluator"))
    loop = _loop(can_sample=False)(_Cfg(out=str(tmp_path / "o")))
    with caplog.at_level(logging.INFO):
        loop.run()
    assert any("cannot sample videos" in s for s in caplog.messages) and not (tmp_path / "o" / "fvd_best.json").exists()


def test_fvd_data_and_split_choose_the_evaluation_set_and_are_run_only(train_data, tmp_path, monkeypatch):
    """--fvd-data / --fvd-split (a held-out validation set's train split, `sfv-bench study`): the set the FVD
    while training selects from; a resume may change them (RUN_ONLY); default: --data's test split."""
    import sfv_train.evaluation as te
    from sfv_core.errors import UserError

    def resolved(**kw):
        return TrainConfig(**{"out": str(tmp_path / "o"), "data": str(tmp_path), "stack": "tiny", "fvd_videos": 4,
                              **kw}).resolved()

    a = resolved()
    assert (a.fvd_data, a.fvd_split) == ("", "test") and {"fvd_data", "fvd_split"} <= RUN_ONLY
    assert a.compared() == dataclasses.replace(a, fvd_data=str(train_data), fvd_split="train").compared()
    p = te.eval_protocol(resolved(fvd_split="train", fold=2))
    assert (p.split, p.fold, p.num_videos, p.balanced) == ("train", 2, 4, True)
    assert te.eval_protocol(a).split == "test"
    seen = []

    def select(ds, proto):
        seen.append((ds.root, proto.split))
        raise UserError("stop here")
    monkeypatch.setattr(te, "select_videos", select)
    for cfg, want in ((resolved(fvd_every=2, fvd_data=str(train_data), fvd_split="train"), (train_data, "train")),
                      (resolved(fvd_every=2, data=str(train_data)), (train_data, "test"))):
        with pytest.raises(UserError, match="stop here"):
            te.TrainFVD(cfg, "cpu")
        assert seen.pop() == (Path(want[0]), want[1])
    args = build_train_parser().parse_args(["--fvd-data", "VAL", "--fvd-split", "train"])
    assert (args.fvd_data, args.fvd_split) == ("VAL", "train")


def test_a_failed_evaluation_is_a_warning_and_a_point_without_numbers(tmp_path, caplog):
    """An evaluation that fails (no FVD) says so on stderr as a warning; its metrics line has no numbers."""
    import logging
    from types import SimpleNamespace

    from sfv_train.evaluation import FVDMonitor, read_points

    (tmp_path / "logs").mkdir()
    lines = []

    def append_metrics(m):
        lines.append(m)
        with open(tmp_path / "logs" / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": 5, **m}) + "\n")

    loop = SimpleNamespace(out=tmp_path, ckpt_root=tmp_path / "checkpoints", step=5, name="sfv",
                           sample_videos=None, append_metrics=append_metrics,
                           acc=SimpleNamespace(log=lambda *a, **k: None))
    failed = {"fvd": None, "n": 8, "seconds": 0.1, "error": "detector refused the clips", "detector": "toy"}
    with caplog.at_level(logging.INFO, logger="sfv_train"):
        FVDMonitor(loop, lambda sample, step: failed)(5)
    record = next(r for r in caplog.records if "step 5: FVD failed" in r.message)
    assert record.levelno == logging.WARNING and "detector refused the clips" in record.message
    assert lines[0]["fvd"] is None and read_points(tmp_path / "logs" / "metrics.jsonl")[0]["fvd"] is None
