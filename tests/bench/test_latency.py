"""`sfv-bench latency`: FLOP counts against docs/reference.md#cost-floors and a hand count, the option search and
its precision check, and a CPU run of the CLI at a tiny shape (JSON + Markdown)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch

from types import SimpleNamespace

from bench.latency import SCHEMA
from bench.latency.command import cli_latency
from bench.latency.models import count_all_flops, load_models, make_shape, stack_configs, unet_inputs
from bench.latency.options import option_space, search_options
from bench.latency.report import default_out_dir, render_markdown
from methods.models.configs import FULL_CONFIGS, build_models, param_count
from methods.models.timing import summarize

L = SimpleNamespace(SCHEMA=SCHEMA, cli_latency=cli_latency, count_all_flops=count_all_flops, load_models=load_models,
                    make_shape=make_shape, stack_configs=stack_configs, unet_inputs=unet_inputs,
                    option_space=option_space, search_options=search_options, FULL_CONFIGS=FULL_CONFIGS,
                    build_meta=lambda configs: build_models(configs, "meta"), param_count=param_count,
                    summarize=summarize)
from sfv_core.errors import UserError


@pytest.fixture(autouse=True)
def _keep_threads():
    """cli_latency(--threads) and the search test set torch's thread count: restore it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_full_size_configs_match_the_real_parameter_counts():
    """docs/reference.md#full-size-configurations: UNet 1.525 B, temporal VAE 97.7 M, CLIP ViT-H/14 632 M (built on meta: no memory)."""
    meta = L.build_meta(L.FULL_CONFIGS)
    counts = {k: L.param_count(m) for k, m in meta.items()}
    assert round(counts["unet"] / 1e9, 3) == 1.525
    assert round(counts["vae"] / 1e6, 1) == 97.7
    assert round(counts["image_encoder"] / 1e6) == 632


def test_full_size_flops_match_facts_and_clip_hand_count():
    """docs/reference.md#cost-floors (counted on meta): UNet 44.8 T (batch 1, 14x72x128), 89.6 T (batch 2), VAE decode
    97.2 T, VAE encode 2.6 T; CLIP ViT-H/14 at 224 equals the closed-form transformer count."""
    shape = L.make_shape("paper")
    f = L.count_all_flops(L.FULL_CONFIGS, shape, {14}, 14)
    assert f["unet_batch1"] == pytest.approx(44.8e12, rel=0.01)
    assert f["unet_batch2"] == 2 * f["unet_batch1"]
    assert f["vae_decode_14f"] == pytest.approx(97.2e12, rel=0.01)
    assert f["vae_encode"] == pytest.approx(2.6e12, rel=0.01)
    # ViT-H/14: 257 tokens, d = 1280, MLP 5120, 32 layers; 2 FLOPs per multiply-add.
    n, d, ff, layers = 257, 1280, 5120, 32
    per_layer = n * (2 * 4 * d * d + 2 * 2 * d * ff) + 2 * 2 * n * n * d   # q,k,v,o + MLP + QK^T, AV
    patch = 2 * 256 * (3 * 14 * 14) * d                                    # patch-embedding conv
    proj = 2 * d * 1024                                                    # visual projection
    assert f["image_encoder"] == layers * per_layer + patch + proj


def test_tiny_unet_flops_double_with_the_batch_and_grow_with_frames():
    cfg = L.stack_configs("tiny")
    shape = L.make_shape("tiny")
    f = L.count_all_flops(cfg, shape, {14, 25}, 14)
    assert f["unet_batch2"] == 2 * f["unet_batch1"]
    assert f["unet_batch2_25f"] == 2 * f["unet_batch1_25f"]
    assert f["unet_batch1"] < f["unet_batch1_25f"] < 2 * f["unet_batch1"]


def test_summarize_percentiles():
    s = L.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["median_ms"], s["p10_ms"], s["p90_ms"], s["min_ms"], s["n"]) == (3.0, 1.4, 4.6, 1.0, 5)


def test_cpu_time_ms_is_torch_benchmark_timer_timeit():
    """On CPU each repeat is one Timer.timeit(number=1): two warm-up calls, then the measured one."""
    import time

    from methods.models.timing import time_ms

    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)

    ms = time_ms(fn, "cpu", warmup=3, repeats=4)
    assert len(ms) == 4 and len(calls) == 1 + 4 * 3          # warmup - 2 own calls, then 3 per repeat
    assert all(9.5 <= v < 200 for v in ms)


def test_option_space_values_lists_and_errors():
    sp = L.option_space({"dtype": "fp32,bf16", "channels_last": "off,on"}, "cpu")
    assert sp["dtype"] == ["fp32", "bf16"] and sp["channels_last"] == [False, True]
    assert sp["compile"] == [False] and sp["cuda_graphs"] == [False]  # CPU auto
    assert L.option_space({}, "cuda")["dtype"] == ["bf16", "fp16", "fp32"]
    with pytest.raises(UserError, match="--cuda-graphs on needs a CUDA device"):
        L.option_space({"cuda_graphs": "on"}, "cpu")
    with pytest.raises(UserError, match="--dtype takes"):
        L.option_space({"dtype": "fp8"}, "cpu")
    with pytest.raises(UserError, match="--attention takes"):
        L.option_space({"attention": "xformers"}, "cpu")


@pytest.fixture(scope="module")
def tiny_unet():
    models, _ = L.load_models("tiny", None, "cpu")
    return models["unet"], L.stack_configs("tiny")["unet"]


def test_search_keeps_only_configurations_within_tolerance(tiny_unet):
    """bf16 is ~1.6% off fp32 on the tiny UNet: eligible at 0.02, never at 1e-4; channels_last in
    fp32 only reorders memory, so it stays within 1e-4."""
    unet, cfg = tiny_unet
    torch.set_num_threads(1)
    inputs = L.unet_inputs(cfg, 1, 4, (4, 4), "cpu", torch.float32)
    space = L.option_space({"dtype": "fp32,bf16", "channels_last": "off,on"}, "cpu")
    opts, check = L.search_options(unet, space, inputs, "cpu", tolerance=1e-4, warmup=0, repeats=1)
    assert opts.dtype == "fp32"
    by_label = {c["label"]: c for c in check["candidates"]}
    assert by_label["fp32 eager"]["rel_l2"] == 0.0 and by_label["fp32 eager"]["passed"]
    assert 1e-3 < by_label["bf16 eager"]["rel_l2"] < 0.05 and not by_label["bf16 eager"]["passed"]
    assert by_label["fp32+channels_last"]["rel_l2"] < 1e-4 and by_label["fp32+channels_last"]["passed"]
    assert check["passed"] and check["tolerance"] == 1e-4

    # a single fixed configuration is still checked and reported
    opts, check = L.search_options(unet, L.option_space({"dtype": "bf16"}, "cpu"), inputs, "cpu",
                                   tolerance=0.05, warmup=0, repeats=1)
    assert opts.dtype == "bf16" and check["passed"] and len(check["candidates"]) == 1
    assert check["chosen_rel_l2"] == pytest.approx(by_label["bf16 eager"]["rel_l2"])


def test_a_candidate_that_does_not_run_is_recorded_and_skipped(tiny_unet, monkeypatch, caplog):
    """A backend that raises is a failed candidate with its error (logged), and the search goes on."""
    import bench.latency.options as options

    unet, cfg = tiny_unet
    inputs = L.unet_inputs(cfg, 1, 4, (4, 4), "cpu", torch.float32)
    real_runner = options.UNetRunner

    def runner(model, opts, device, **kw):
        if opts.channels_last:
            raise RuntimeError("no such kernel\nsecond line")
        return real_runner(model, opts, device, **kw)

    monkeypatch.setattr(options, "UNetRunner", runner)
    with caplog.at_level(logging.INFO, logger="bench.latency"):
        opts, check = L.search_options(unet, L.option_space({"channels_last": "off,on"}, "cpu"), inputs, "cpu",
                                       tolerance=1e-4, warmup=0, repeats=1)
    lines = caplog.messages
    failed = {c["label"]: c for c in check["candidates"]}["fp32+channels_last"]
    assert failed["error"] == "RuntimeError: no such kernel" and not failed["passed"]
    assert not opts.channels_last and check["passed"]
    assert "  candidate fp32+channels_last: RuntimeError: no such kernel" in lines
    assert any(line.startswith("  candidate fp32 eager: ") and "(pass)" in line for line in lines)


def _args(tmp_path, **kw):
    base = dict(shape="tiny", stack=None, methods="svd:2,sfv:1", device="cpu", dtype="fp32,bf16",
                attention="auto", channels_last="auto", compile="auto", cuda_graphs="auto", tolerance=0.02,
                repeats=2, warmup=0, loop_repeats=1, num_frames=4, height=32, width=32, decode_chunk_size=3,
                no_method_check=False, threads=1, seed=0, out=str(tmp_path / "lat"))
    base.update(kw)
    return argparse.Namespace(**base)


def test_cli_latency_tiny_writes_json_and_markdown(tmp_path, capsys):
    from bench.latency import regress

    args = _args(tmp_path)
    assert L.cli_latency(args) == 0
    r = json.loads((tmp_path / "lat" / "latency.json").read_text())
    md = (tmp_path / "lat" / "latency.md").read_text()

    assert r["schema"] == L.SCHEMA
    assert {"gpu_name", "driver", "torch", "cuda", "diffusers", "python", "cpu", "threads"} <= set(r["env"])
    assert r["env"]["gpu_name"] is None and r["env"]["threads"] == 1 and r["env"]["torch"] == torch.__version__
    assert set(r["options"]) == {"dtype", "attention", "channels_last", "compile", "cuda_graphs"}
    assert r["shape"]["latent"] == [4, 4, 4, 4]
    for b in (1, 2):
        p = r["unet_pass"][f"batch{b}"]
        assert p["n"] == 2 and p["batch"] == b and p["p10_ms"] <= p["median_ms"] <= p["p90_ms"]
        assert r["tflops_achieved"][f"unet_batch{b}"] == pytest.approx(
            r["flops"][f"unet_batch{b}"] / (p["median_ms"] / 1e3) / 1e12)
    assert r["flops"]["unet_batch2"] == 2 * r["flops"]["unet_batch1"]

    pc = r["precision_check"]
    assert pc["passed"] and pc["tolerance"] == 0.02 and pc["chosen"] == r["options"]
    assert [c["options"]["dtype"] for c in pc["candidates"]] == ["fp32", "bf16"]

    methods = {m["spec"]: m for m in r["methods"]}
    assert (methods["svd:2"]["calls"], methods["svd:2"]["batch"]) == (2, 2)
    assert (methods["sfv:1"]["calls"], methods["sfv:1"]["batch"]) == (1, 1)
    for m in methods.values():
        e = m["e2e"]
        assert e["decode_chunk_size"] == 3 and e["frames_decoded"] == 4
        assert e["total_ms"] == pytest.approx(e["image_encoder_ms"] + e["vae_encode_ms"] + e["unet_loop_ms"]
                                              + e["vae_decode_ms"])
        key = f"batch{m['batch']}"
        assert m["unet_ms_median"] == pytest.approx(m["calls"] * r["unet_pass"][key]["median_ms"])
        assert m["unet_flops"] == m["calls"] * r["flops"][f"unet_{key}"]
        run = m["method_run"]  # the real adapter on the tiny stack made the same calls
        assert run["calls_logged"] == m["calls"] and run["batches_logged"] == [m["batch"]]
    assert methods["sfv:1"]["paper"]["latency_s"] == 0.30 and methods["svd:2"]["paper"] is None

    assert "| SF-V (Ours) | 1 | 1 x 1 | 0.30 |" in md and "| SVD | 25 | — | 10.79 |" in md
    assert "| svd:2 | 2 | 2 x 2 |" in md and "Precision check:" in md

    # Paper / ours only for the paper's shape with full-size models on a GPU; else "—" and why
    sfv_row = next(line for line in md.splitlines() if line.startswith("| SF-V (Ours) |"))
    assert sfv_row.endswith("| — |")
    note = next(line for line in md.splitlines() if line.startswith("Paper / ours is shown only"))
    assert "measured 4 frames 32x32 (tiny shape)" in note and "ran on a CPU" in note and "M-parameter UNet" in note
    paper = {**r, "shape": {**L.make_shape("paper").to_dict()}, "env": {**r["env"], "gpu_name": "NVIDIA H200"},
             "models": {**r["models"], "unet_params": 1524623082}}
    sfv = methods["sfv:1"]
    md_paper = render_markdown(paper)
    assert f"| {300 / sfv['unet_ms_median']:.2f}x |" in md_paper and "Paper / ours is shown only" not in md_paper
    on_cpu = render_markdown({**paper, "env": r["env"]})
    assert "this run ran on a CPU, so" in on_cpu and f"{300 / sfv['unet_ms_median']:.2f}x" not in on_cpu
    # a loop far from calls x median pass (a busy machine) is flagged in words
    busy = {**r, "methods": [{**m, "loop_vs_estimate": 44.8} if m["spec"] == "sfv:1" else m for m in r["methods"]]}
    assert "IMPLAUSIBLE: the sfv:1 loop took 44.8x its estimate" in render_markdown(busy)

    # the same run compared with itself passes the regression check
    capsys.readouterr()
    path = str(tmp_path / "lat" / "latency.json")
    assert regress.cli_regress(argparse.Namespace(baseline=path, current=path, tolerance="10")) == 0
    assert "no regression" in capsys.readouterr().out


def test_cli_latency_bad_input(tmp_path):
    with pytest.raises(UserError, match="multiple of 8"):
        L.cli_latency(_args(tmp_path, height=30))
    with pytest.raises(UserError, match="unknown method"):
        L.cli_latency(_args(tmp_path, methods="svd:2,nosuch:1"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            L.cli_latency(_args(tmp_path, device="cuda"))
    with pytest.raises(UserError, match="--repeats must be >= 1"):
        L.cli_latency(_args(tmp_path, repeats=0))
    (tmp_path / "afile").write_text("x")
    for out in ("afile", "afile/sub"):
        with pytest.raises(UserError, match="afile is a file, not a folder; pass a folder") as e:
            L.cli_latency(_args(tmp_path, out=str(tmp_path / out)))
        assert "\n" not in str(e.value)


def test_cli_latency_refuses_an_i2v_row_in_one_line(tmp_path):
    """The options benchmark runs the SVD family's samplers on its UNet; an i2v row (its own pipeline) is
    timed by `sfv-bench run`, so it is refused before any work, naming that command."""
    pipeline = tmp_path / "ltx"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "LTXImageToVideoPipeline"}))
    with pytest.raises(UserError, match=r"`sfv-bench latency` times SVD-family UNets; i2v rows are timed by "
                                        r"`sfv-bench run`") as e:
        L.cli_latency(_args(tmp_path, methods=f"sfv:1,i2v:{pipeline}:4"))
    assert "\n" not in str(e.value) and not (tmp_path / "lat").exists()


def test_default_out_is_outside_the_committed_results():
    assert default_out_dir(L.make_shape("tiny"), "cpu") == Path("runs") / "latency" / "tiny-cpu"


def test_sfv_bench_latency_parses_its_own_arguments(capsys):
    from bench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["latency", "--shape", "bogus"])
    assert e.value.code == 2
    assert "argument --shape: invalid choice: 'bogus'" in capsys.readouterr().err
