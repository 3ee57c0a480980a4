"""The mini world's detector trainer on a tiny pool: the loss falls, the export loads back as an FVD
detector standardised per head (and a tampered one is refused), a resume equals the uninterrupted
run bit for bit; the degradations it is taught do what they say."""
from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sfv_fvd.detectors import load_detector, load_mini_detector, preprocess
from sfv_fvd.i3d import InceptionI3d
from sfv_core.errors import UserError
from sfv_train.classifier import APPLY, DetectorConfig, DetectorTrainer, head_scales, heads, pool_labels
from sfv_train.pool import PoolSpec, build_pool

RUN = dict(report_to="none", progress=False, log_every=5, checkpoint_every=10, checkpoints_total_limit=0,
           batch_size=4, lr=3e-3, warmup_steps=2, max_steps=30)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """40 pool clips: 32 to train on, 8 held out, with their classes."""
    spec = PoolSpec(size=40)
    pool = build_pool(spec, tmp_path_factory.mktemp("pool"))
    labels = pool_labels(spec)
    return pool[8:], labels[8:], pool[:8], labels[:8]


def _trainer(out, clips, **kw):
    return DetectorTrainer(DetectorConfig(out=str(out), **{**RUN, **kw}), *clips)


@pytest.fixture(scope="module")
def run(clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("detector") / "run"
    torch.manual_seed(0)                                      # what build() does before making the network
    init = InceptionI3d(num_classes=16, width_mult=0.125, input_size=64)
    # plain clips, batch 8: every head learns in 30 steps (at batch 4 the class loss stayed at chance, ln 10,
    # above or below it as float rounding or the seed fell). BatchNorm momentum 0.1 (training is the same,
    # batch statistics): at 0.01 the running statistics were still 74% the initial ones after 30 steps, the
    # eval-mode features varied by ~1e-5 over real clips and the spread check below measured float32 noise
    t = _trainer(out, clips, batch_size=8, bn_momentum=0.1, p_degrade=0.0, p_reverse=0.0, appearance=False)
    t.run()
    return out, t, init


def _loss_on_training_clips(t, net, clips) -> dict:
    """The losses of 16 plain training clips, batch statistics, no dropout: no noise."""
    net = copy.deepcopy(net).train()
    net.dropout.p = 0.0
    x, labels = clips[0][:16], torch.from_numpy(clips[1][:16])
    with torch.no_grad():
        y = net(preprocess(x, "cpu", 64))
    return t.losses(y, labels, torch.zeros(16, dtype=torch.long), torch.zeros(16, 4))


def _same_tensors(a: Path, b: Path):
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def test_learns_and_exports_a_detector_that_loads(run, clips):
    out, t, init = run
    before, after = _loss_on_training_clips(t, init, clips), _loss_on_training_clips(t, t.net, clips)
    # each head against its chance level (a uniform guess: ln 10, ln 2) or its start; over 20 runs (10 seeds
    # of the network and batches, 3 of the pool) the worst were class 2.05, arrow 0.22, level x0.27, total x0.82
    assert after["loss_class"] < math.log(10) - 0.1 and after["loss_arrow"] < 0.5 * math.log(2), (before, after)
    assert after["loss_level"] < 0.5 * before["loss_level"] and after["loss"] < 0.9 * before["loss"], (before, after)
    meta = json.loads((out / "export" / "detector.json").read_text())
    assert meta["num_classes"] == meta["feature_dim"] == 16 and meta["width_mult"] == 0.125
    assert meta["input_size"] == 64 and meta["heads"] == heads(10) and meta["train_steps"] == 30
    fig = meta["figures"]
    assert fig["heldout_clips"] == 8 and 0 <= fig["class_accuracy"] <= 1 and 0 <= fig["arrow_accuracy"] <= 1
    assert set(fig["level_mae"]) == {"blur", "noise", "shuffle", "frozen"}
    det = load_mini_detector(out / "export")
    assert det.kind == "mini" and det.is_toy and det.feature_dim == 16 and det.input_size == 64
    assert "not comparable with published FVD" in det.label and det.sha256 == meta["sha256"]
    held = clips[2][:3]
    f = det.features(held)
    assert f.shape == (3, 16) and f.dtype == np.float64
    with torch.no_grad():                     # the exported network is the eval-mode one, each head / its scale
        ref = t.net.eval()(preprocess(held, "cpu", 64)).double().numpy()
    scales = meta["feature_scale"]["per_head"]
    assert meta["feature_scale"]["clips"] == 32 and set(scales) == {h["name"] for h in heads(10)}
    div = np.concatenate([[scales[h["name"]]] * h["size"] for h in heads(10)])
    assert len(set(np.round(div, 6))) > 2                      # heads really get different scales
    np.testing.assert_allclose(f, ref / div, rtol=1e-5, atol=1e-6)
    for h in slice(0, 10), slice(10, 12):                       # class and arrow decisions unchanged
        assert (f[:, h].argmax(1) == ref[:, h].argmax(1)).all()
    pool_spread = head_scales(torch.from_numpy(det.features(clips[0])), heads(10))   # the 32 pool clips it used
    np.testing.assert_allclose(list(pool_spread.values()), 1.0, rtol=1e-4)


def test_a_tampered_or_missing_detector_is_refused(run, tmp_path, monkeypatch):
    folder = tmp_path / "det"
    shutil.copytree(run[0] / "export", folder)
    weights = folder / "detector.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match detector.json") as e:
        load_mini_detector(folder)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not a mini detector folder"):
        load_mini_detector(tmp_path / "nowhere")
    world = tmp_path / "world"                                         # where 'mini' looks (methods.models.mini)
    with pytest.raises(UserError, match="run `sfv-bench build-mini`"):
        load_detector("mini", mini_world=world)
    shutil.copytree(run[0] / "export", world / "detector")
    assert load_detector("mini", mini_world=world).kind == "mini"
    monkeypatch.setenv("SFV_MINI_WORLD", str(world))                   # a user's pointer at the same world
    assert load_detector("mini").path == load_detector("mini", mini_world=world).path == world / "detector" / \
        "detector.safetensors"


def test_resume_equals_the_uninterrupted_run(clips, tmp_path, caplog):
    """With every augmentation on (its randomness, the batches and dropout all continue exactly)."""
    out, resumed = tmp_path / "straight", tmp_path / "resumed"
    kw = dict(batch_size=2, max_steps=6, checkpoint_every=3, p_degrade=0.5)
    _trainer(out, clips, **kw).run()
    shutil.copytree(out / "checkpoints" / "step-000003", resumed / "checkpoints" / "step-000003")
    shutil.copy(out / "config.json", resumed / "config.json")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _trainer(resumed, clips, resume="latest", **kw).run()
    assert any("resumed from" in line and "(step 3)" in line for line in caplog.messages), caplog.messages
    last = Path("checkpoints") / "step-000006"
    _same_tensors(out / last / "detector.safetensors", resumed / last / "detector.safetensors")
    sa, sb = (torch.load(p / last / "optimizer.pt", weights_only=True) for p in (out, resumed))
    assert all(torch.equal(v, sb["state"][k][n]) for k in sa["state"] for n, v in sa["state"][k].items())
    a, b = (json.loads((p / "export" / "detector.json").read_text()) for p in (out, resumed))
    assert a["sha256"] == b["sha256"] and a["figures"] == b["figures"]


def test_degradations_do_what_they_say():
    clip = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (14, 8, 8, 3), dtype=np.uint8))
    gen = torch.Generator().manual_seed(0)
    for name in APPLY:
        assert torch.equal(APPLY[name](clip, 0, gen), clip), name
    moved = (APPLY["shuffle"](clip, 0.5, gen) != clip).flatten(1).any(1)
    assert int(moved.sum()) == 7                      # round(0.5 * 14) frames, every one misplaced
    frozen = APPLY["frozen"](clip, 4)
    assert torch.equal(frozen[:10], clip[:10]) and all(torch.equal(f, clip[0]) for f in frozen[10:])
    flat = torch.full((14, 8, 8, 3), 100, dtype=torch.uint8)
    assert torch.equal(APPLY["blur"](flat, 1.5), flat)                # blur keeps a flat image
    noisy = APPLY["noise"](flat, 20.0, gen).float()
    assert 15 < noisy.std() < 25 and abs(noisy.mean() - 100) < 2


@pytest.mark.parametrize("make, message", [
    (lambda d, c: DetectorConfig(out=str(d), batch_size=0).resolved(), "batch_size >= 1"),
    (lambda d, c: DetectorConfig(out=str(d), input_size=48).resolved(), "multiple of 32"),
    (lambda d, c: _trainer(d, (c[0].astype(np.float32),) + c[1:]), "must be a uint8 array"),
    (lambda d, c: _trainer(d, (c[0], c[1][:3]) + c[2:]), "pool labels: one integer class"),
    (lambda d, c: _trainer(d, c[:3] + (c[3] + 10,)), "held-out labels: one integer class in 0..9"),
])
def test_one_line_errors(make, message, clips, tmp_path):
    with pytest.raises(UserError, match=message) as e:
        make(tmp_path, clips)
    assert "\n" not in str(e.value)
