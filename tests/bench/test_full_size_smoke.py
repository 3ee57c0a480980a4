"""benchmarks/full_size_smoke_generate.py: its code on the tiny configs (every part but the size), and its
full-size stack on the meta device (the real configs; the xt view copies no tensor)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import full_size_smoke_generate as smoke  # noqa: E402


def test_smoke_code_path_on_tiny_configs(tmp_path, capsys):
    out = tmp_path / "generate.md"
    rc = smoke.main(["--stack", "tiny", "--methods", "svd:2,animatelcm:2,sfv:1", "--dtypes", "float32,bfloat16",
                     "--size", "32", "--write", str(out)])
    assert rc == 0, capsys.readouterr().out[-2000:]
    rows = [ln for ln in out.read_text().splitlines() if ln.startswith("| ") and not ln.startswith("| method")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]
    assert [(c[0], c[1]) for c in cells] == [(s, d) for d in ("float32", "bfloat16")
                                             for s in ("svd:2", "animatelcm:2", "sfv:1")]
    by = {(c[0], c[1]): c for c in cells}
    for d in ("float32", "bfloat16"):
        assert by["svd:2", d][2] == "2 x 2" and by["sfv:1", d][2] == "1 x 1"          # CFG: batch-2 calls
        assert by["animatelcm:2", d][3] == "25" and by["svd:2", d][3] == "14"         # xt: 25 frames made
        assert all(c[7] == "14x32x32x3" and c[8] == "ok" for c in (by[s, d] for s in ("svd:2", "sfv:1")))


def test_full_size_stack_on_meta():
    from methods.models.configs import FULL_CONFIGS, param_count

    pipe = smoke.build_stack("full", device="meta")
    assert dict(pipe.unet.config)["num_frames"] == 14 and round(param_count(pipe.unet) / 1e6) == 1525
    layers = pipe.image_encoder.vision_model.encoder.layers
    assert len(layers) == 32 == pipe.image_encoder.config.num_hidden_layers and len({id(m) for m in layers}) == 1
    assert {k: getattr(pipe.image_encoder.config, k) for k in FULL_CONFIGS["image_encoder"]} == \
        FULL_CONFIGS["image_encoder"]
    xt = smoke.xt_view(pipe, "full")
    assert dict(xt.unet.config)["num_frames"] == 25 and xt.vae is pipe.vae
    assert dict(xt.unet.named_parameters()).keys() == dict(pipe.unet.named_parameters()).keys()


def test_xt_view_shares_the_tensors():
    """On real storage (the tiny stack): the -xt view's parameters are the img2vid UNet's, not copies."""
    pipe = smoke.build_stack("tiny")
    xt = smoke.xt_view(pipe, "tiny")
    mine, theirs = dict(xt.unet.named_parameters()), dict(pipe.unet.named_parameters())
    assert mine.keys() == theirs.keys() and all(mine[k].data_ptr() == theirs[k].data_ptr() for k in mine)


def test_resume2_passes_only_on_a_refusal_that_trains_nothing_and_a_resume_that_records_two_processes(
        tmp_path, monkeypatch):
    """benchmarks/full_size_smoke_train.py's resume2 part, its three torchrun steps faked: a crash (not exit 2)
    or an extended one-process run is no refusal, and the step-3 checkpoint must record 2 processes."""
    import argparse
    import json

    import full_size_smoke_train as train_smoke

    def run(codes, processes=2, extended=False):
        (tmp_path / "runs").mkdir(exist_ok=True)
        calls = iter(codes)

        def torchrun(argv):
            rc = next(calls)
            if argv[0] == "--resume" and argv[1].endswith("sfv") and extended:
                (tmp_path / "runs" / "sfv" / "checkpoints" / "step-000004").mkdir(parents=True)
            if argv[0] == "--resume" and argv[1].endswith("sfv-2procs") and rc == 0:
                ckpt = tmp_path / "runs" / "sfv-2procs" / "checkpoints" / "step-000003"
                ckpt.mkdir(parents=True)
                (ckpt / "state.json").write_text(json.dumps({"step": 3, "num_processes": processes, "rng": 0}))
            return rc

        monkeypatch.setattr(train_smoke, "_torchrun_cli", torchrun)
        rec = train_smoke.part_resume2(argparse.Namespace(work=str(tmp_path), size=8), sfv_peak=1)
        import shutil
        shutil.rmtree(tmp_path / "runs")
        return rec

    assert run([2, 0, 0])["rc"] == 0
    assert run([2, 0, 0])["resumed_checkpoint"] == {"step": 3, "num_processes": 2}
    assert run([137, 0, 0])["rc"] == 1                      # killed, not refused
    assert run([2, 0, 0], extended=True)["rc"] == 1         # the one-process run went on
    assert run([2, 0, 0], processes=1)["rc"] == 1
    assert run([2, 0, 1])["rc"] == 1 and run([2, 0, 1])["resumed_checkpoint"]["step"] is None   # no crash
