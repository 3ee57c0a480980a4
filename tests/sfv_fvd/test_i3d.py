"""The I3D port (sfv_fvd/i3d.py) and the detector loaders (sfv_fvd/detectors.py)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sfv_fvd import detectors as D
from sfv_core.errors import UserError
from sfv_core.fsutil import cache_dir
from sfv_fvd.i3d import InceptionI3d, num_parameters, same_pad


def _video(seed, b=1, t=9, h=48, w=64):
    """Smooth uint8 videos (B, T, H, W, 3): low-resolution noise upsampled (not flat, not white)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, max(t // 3, 2), 6, 8, generator=g)
    x = F.interpolate(x, size=(t, h, w), mode="trilinear", align_corners=False)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1).contiguous().numpy()


@pytest.fixture(scope="module")
def full_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        m = InceptionI3d()
        for mod in m.modules():            # non-trivial BN statistics, so they must survive the reload
            if isinstance(mod, torch.nn.BatchNorm3d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_state_dict_matches_reference_port(full_model):
    sd = full_model.state_dict()
    assert len(sd) == 344
    assert num_parameters(full_model) == 12_697_264
    shapes = {
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
        "Conv3d_1a_7x7.bn.running_var": (64,),
        "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
        "Mixed_4f.b3b.conv3d.weight": (128, 528, 1, 1, 1),
        "Mixed_5b.b0.conv3d.weight": (256, 832, 1, 1, 1),
        "Mixed_5c.b2b.bn.weight": (128,),
        "logits.conv3d.weight": (400, 1024, 1, 1, 1),
        "logits.conv3d.bias": (400,),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith("logits.bn") for k in sd)
    assert sum(k.endswith("num_batches_tracked") for k in sd) == 57
    bns = [m for m in full_model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(bns) == 57 and all(b.eps == 1e-5 and b.momentum == 0.001 for b in bns)


@pytest.mark.parametrize("size,k,s,expected", [
    (224, 7, 2, (2, 3)), (9, 7, 2, (3, 3)), (112, 3, 2, (0, 1)), (56, 3, 1, (1, 1)),
    (5, 3, 2, (1, 1)), (14, 2, 2, (0, 0)), (7, 2, 2, (0, 1)), (9, 1, 1, (0, 0)),
])
def test_tf_same_padding(size, k, s, expected):
    assert same_pad(size, k, s) == expected
    out = -(-size // s)   # SAME: output length is ceil(size / stride)
    assert (size + sum(expected) - k) // s + 1 == out


def test_endpoint_shapes_on_meta():
    with torch.device("meta"):
        m = InceptionI3d()
    x = torch.empty(2, 3, 16, 224, 224, device="meta")
    assert tuple(m.forward_features(x).shape) == (2, 1024, 2, 7, 7)
    assert tuple(m(x).shape) == (2, 400)
    assert tuple(m(torch.empty(1, 3, 9, 224, 224, device="meta")).shape) == (1, 400)
    with pytest.raises(ValueError, match="T>=9"):
        m(torch.empty(1, 3, 8, 224, 224, device="meta"))
    with pytest.raises(ValueError, match="224x224"):
        m(torch.empty(1, 3, 9, 256, 256, device="meta"))


def test_width_mult_scales_channels():
    toy = InceptionI3d(width_mult=1 / 16)
    assert len(toy.state_dict()) == 344
    assert toy.Conv3d_1a_7x7.conv3d.out_channels == 4 and toy.logits.conv3d.in_channels == 64
    with pytest.raises(ValueError):
        InceptionI3d(width_mult=0)


def test_saved_state_dict_reloads_identically(full_model, tmp_path):
    """torch.save -> load_detector (torch.load weights_only=True) gives bit-identical features."""
    video = _video(0, t=9)
    with torch.no_grad():
        expected = full_model(D.preprocess(video)).double().numpy()
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(full_model.state_dict(), path)
    reloaded = InceptionI3d()
    reloaded.load_state_dict(torch.load(path, weights_only=True))
    for (k, a), b in zip(full_model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.warns(D.DetectorWeightsWarning, match="does not match the published i3d_pretrained_400.pt"):
        det = D.load_detector(str(path))
    assert det.kind == "i3d400" and not det.verified and not det.is_toy
    assert det.sha256 == D.sha256_file(path) and "unverified" in det.label
    np.testing.assert_array_equal(det.features(video), expected)


def test_state_dict_key_errors(full_model, tmp_path):
    sd = dict(full_model.state_dict())
    sd["Conv3d_1a.conv3d.weight"] = sd.pop("Conv3d_1a_7x7.conv3d.weight")
    torch.save(sd, tmp_path / "renamed.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", D.DetectorWeightsWarning)
        with pytest.raises(UserError, match=r"1 missing keys \['Conv3d_1a_7x7.conv3d.weight'\], "
                                            r"1 unexpected keys \['Conv3d_1a.conv3d.weight'\]"):
            D.load_detector(str(tmp_path / "renamed.pt"))
        sd = {k: v for k, v in full_model.state_dict().items()}
        sd["logits.conv3d.bias"] = torch.zeros(600)
        torch.save(sd, tmp_path / "k600.pt")
        with pytest.raises(UserError, match=r"wrong shape.*logits.conv3d.bias \(600,\) vs \(400,\)"):
            D.load_detector(str(tmp_path / "k600.pt"))
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        with pytest.raises(UserError, match="cannot be read"):
            D.load_detector(str(tmp_path / "junk.pt"))


class _StyleGANVI3D(torch.nn.Module):
    """A module with the calling convention of StyleGAN-V's i3d_torchscript.pt."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale:
            x = x.float() / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        logits = self.net(x)
        if return_features:
            return logits
        return torch.softmax(logits, dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_detector_path(tmp_path):
    toy = D.load_detector("toy")
    scripted = torch.jit.script(_StyleGANVI3D(toy.model))
    path = tmp_path / "i3d_torchscript.pt"
    scripted.save(str(path))
    with pytest.warns(D.DetectorWeightsWarning, match="does not match the published i3d_torchscript.pt"):
        with pytest.raises(UserError, match="runs code from the file: pass --trust-detector"):
            D.load_detector(str(path))      # an unverified TorchScript file is not executed by default
    with pytest.warns(D.DetectorWeightsWarning, match="does not match the published i3d_torchscript.pt"):
        det = D.load_detector(str(path), trust=True)
    assert det.kind == "torchscript" and det.path == path
    video = _video(1, b=2, t=10)
    got, ref = det.features(video), toy.features(video)
    assert got.dtype == np.float64 and got.shape == (2, 400)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)   # called with return_features=True (logits)
    assert not np.allclose(got.sum(axis=1), 1.0)


def test_pins_and_git_blob(tmp_path, monkeypatch):
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert D.git_blob_sha1(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"   # `git hash-object` of ""
    f = tmp_path / "i3d_pretrained_400.pt"
    f.write_bytes(b"abc")
    with pytest.warns(D.DetectorWeightsWarning, match="does not match the published"):
        assert D.check_pin(f, D.sha256_file(f)) is False
    with pytest.raises(UserError, match="does not match the published"):
        D.check_pin(f, D.sha256_file(f), strict=True)
    g = tmp_path / "my_i3d.pt"
    g.write_bytes(b"abc")
    with pytest.warns(D.DetectorWeightsWarning, match="sha256 not in the known list"):
        assert D.check_pin(g, D.sha256_file(g)) is False
    monkeypatch.setitem(D.KNOWN_GIT_BLOB_SHA1, "i3d_pretrained_400.pt", D.git_blob_sha1(f))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert D.check_pin(f, D.sha256_file(f)) is True
        assert D.check_pin(g, D.sha256_file(g)) is True   # same bytes under another name


def test_named_detectors_never_download():
    for name, fname, who in (("tats", "i3d_pretrained_400.pt", "TATS"), ("stylegan-v", "i3d_torchscript.pt", "StyleGAN-V")):
        with pytest.raises(UserError) as e:
            D.load_detector(name)
        msg = str(e.value)
        assert str(cache_dir("detectors") / fname) in msg and who in msg and "never downloaded" in msg
    with pytest.raises(UserError, match="unknown detector 'resnet'"):
        D.load_detector("resnet")
    with pytest.raises(UserError, match="not found"):
        D.load_detector("/nonexistent/i3d.pt")


def test_toy_detector_is_seeded_and_labelled():
    """Seeded, labelled, kept in the cache once built; a cached file whose tensors do not hash to the
    sha256 written beside them is rebuilt (the same detector, the file mended)."""
    from safetensors.torch import load_file, save_file

    from sfv_fvd import toy

    with pytest.raises(UserError, match="no FVD detector given: pass 'toy'"):
        D.load_detector(None)              # the toy is never chosen silently
    a = D.load_detector("toy")
    path = toy.cache_path(0)
    assert path.is_file() and str(path).startswith(str(cache_dir("toy-detector")))
    state = load_file(str(path))
    state["Conv3d_1a_7x7.conv3d.weight"][0, 0, 0, 0, 0] += 1.0
    save_file(state, str(path), metadata={"sha256": a.sha256})          # damaged, with the old sha256
    toy.toy_model.cache_clear()
    b = D.load_detector("toy", seed=0)
    c = D.load_detector("toy", seed=1)
    assert a.is_toy and a.kind == "toy" and "toy detector" in a.label and a.path is None
    assert a.sha256 == b.sha256 != c.sha256
    toy.toy_model.cache_clear()
    assert toy.toy_model(0)[1] == a.sha256 and toy._read(path, 0) is not None        # mended on disk
    video = _video(2, b=4, t=9)
    fa, fb = a.features(video), b.features(video)
    np.testing.assert_array_equal(fa, fb)
    # Not degenerate: features vary across clips at a scale comparable to their size.
    assert np.isfinite(fa).all()
    spread = fa.std(axis=0).mean() / np.sqrt((fa ** 2).mean())
    assert spread > 0.05


def test_preprocess_matches_reference_rule():
    """TATS / cd-fvd preprocess: bilinear (align_corners=False, no antialias) to 224, 2x/255-1, BCTHW."""
    video = _video(3, b=2, t=9, h=240, w=320)
    b, t, h, w, c = video.shape
    frames = torch.FloatTensor(video).flatten(end_dim=1).permute(0, 3, 1, 2).contiguous()
    ref = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False)
    ref = 2.0 * ref.view(b, t, c, 224, 224).transpose(1, 2).contiguous() / 255.0 - 1
    got = D.preprocess(video)
    assert got.shape == (2, 3, 9, 224, 224)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    assert got.min() >= -1 and got.max() <= 1
    with pytest.raises(ValueError, match="at least 9 frames"):
        D.preprocess(video[:, :8])


def test_tf32_off_during_extraction_and_restored(monkeypatch):
    det = D.load_detector("toy")
    seen = []

    def fake_forward(x):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return torch.zeros(x.shape[0], 400)

    monkeypatch.setattr(det, "model", fake_forward)
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        det.features(_video(4, t=9))
        assert seen == [(False, False)]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.slow
def test_toy_detector_is_bit_stable_across_thread_counts(tmp_path):
    """Its sha256 keys the real-statistics cache and labels every toy number: built with 1 and with 2
    threads it is the same, and the same as the cached one."""
    import os
    import subprocess
    import sys

    code = ("import torch, sys; torch.set_num_threads(int(sys.argv[1])); "
            "from sfv_fvd.detectors import toy_detector; print(toy_detector(0).sha256)")
    builds = [subprocess.Popen([sys.executable, "-c", code, str(n)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "SFV_BENCH_CACHE": str(tmp_path / str(n))})
              for n in (1, 2)]                         # side by side, each its own empty cache: both build it
    shas = {b.communicate()[0].strip() for b in builds}
    assert [b.returncode for b in builds] == [0, 0]
    assert len(shas) == 1 and len(next(iter(shas))) == 64
    assert D.load_detector("toy").sha256 in shas       # = this session's, which its cache may have given
