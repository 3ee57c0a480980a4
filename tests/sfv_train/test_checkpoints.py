"""Checkpoints a run can afford and read back: a checkpoint written by P processes (each writes a share),
the weight of one before it is written, a load on the device a multi-process CPU run has ("cpu:0"),
"damaged" said of damaged files only, a full disk as one line that loses nothing, keep-last K and
milestones."""
from __future__ import annotations

import errno
import threading

import pytest
import torch

from sfv_core.errors import UserError
from sfv_train.checkpoint import (_share, checkpoint_sizes, damage, export_model, list_checkpoints, load_checkpoint,
                                  optimizer_state_bytes, save_checkpoint)


class Proc:
    """What save/load_checkpoint use of an Accelerator: process index and count, device, a barrier."""

    def __init__(self, index=0, count=1, device="cpu", barrier=None):
        self.process_index, self.num_processes, self.device = index, count, torch.device(device)
        self.is_main_process = index == 0
        self.barrier = barrier

    def wait_for_everyone(self):
        if self.barrier is not None:
            self.barrier.wait(timeout=30)


def _parts(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(4, 6)).square().sum().backward()
    opt.step()
    return model, opt


def _save(root, step, proc, model, opt, limit=0):
    return save_checkpoint(root, step, proc, torch.Generator().manual_seed(step), weights={"model": model.state_dict()},
                           optimizers={"opt": opt}, config={"a": 1}, state={}, limit=limit)


def test_two_processes_write_one_checkpoint_and_it_loads_on_cpu_0(tmp_path):
    """Both processes write a share of the files (rank 0 the largest, rank 1 the rest); the folder is whole
    and loads where accelerate's multi-process CPU device is cpu:0."""
    model, opt = _parts()
    writers = {"model.safetensors": (None, 212), "opt.pt": (None, 440)}
    assert _share(writers, 0, 2) == ["opt.pt"] and _share(writers, 1, 2) == ["model.safetensors"]
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=_save, args=(tmp_path, 7, Proc(r, 2, barrier=barrier), model, opt))
               for r in (1, 0)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    ckpt = tmp_path / "step-000007"
    assert list_checkpoints(tmp_path) == [ckpt] and damage(ckpt) is None
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "opt.pt", "rng-0.pt",
                                                      "rng-1.pt", "state.json"]
    twin, twin_opt = _parts(seed=1)
    loaded = {}
    for rank in (0, 1):
        state = load_checkpoint(ckpt, Proc(rank, 2, device="cpu:0"), torch.Generator(),
                                weights={"model": twin.load_state_dict}, optimizers={"opt": twin_opt})
        loaded[rank] = state["step"]
    assert loaded == {0: 7, 1: 7}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    assert torch.equal(twin_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_damaged_only_when_the_file_is(tmp_path, monkeypatch):
    """A whole optimiser file that fails to load for another reason (here torch.load itself) is that
    error, not 'damaged'; a truncated one is 'damaged', naming the file."""
    model, opt = _parts()
    ckpt = _save(tmp_path, 1, Proc(), model, opt)
    real_load = torch.load

    def failing_load(*a, **k):
        raise RuntimeError("not the file's fault")

    monkeypatch.setattr(torch, "load", failing_load)
    with pytest.raises(RuntimeError, match="not the file's fault"):
        load_checkpoint(ckpt, Proc(), torch.Generator(), weights={}, optimizers={"opt": opt})
    monkeypatch.setattr(torch, "load", real_load)
    path = ckpt / "opt.pt"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(UserError, match=r"opt.pt is damaged \(truncated or not a torch.save file"):
        load_checkpoint(ckpt, Proc(), torch.Generator(), weights={}, optimizers={"opt": opt})


class FullDisk:
    """A file on a full disk: every write fails with ENOSPC."""

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def fill_disk_for(name: str, monkeypatch) -> None:
    """torch.save of a file called ``name`` behaves as on a full disk (measured on a 1 MB tmpfs): given a
    path it raises torch's bare RuntimeError, given a file object the file's OSError."""
    real_save = torch.save

    def save(obj, f, *a, **k):
        if not str(getattr(f, "name", f)).endswith(name):
            return real_save(obj, f, *a, **k)
        if isinstance(f, str | bytes) or hasattr(f, "__fspath__"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        return real_save(obj, FullDisk(), *a, **k)

    monkeypatch.setattr(torch, "save", save)


def test_full_disk_is_one_oserror_and_keeps_the_older_checkpoints(tmp_path, monkeypatch):
    """A full disk while writing is an OSError(ENOSPC) naming the fix; the unfinished folder is removed,
    the checkpoint before it kept."""
    model, opt = _parts()
    _save(tmp_path, 1, Proc(), model, opt)
    fill_disk_for("opt.pt", monkeypatch)
    with pytest.raises(OSError) as e:
        _save(tmp_path, 2, Proc(), model, opt)
    assert e.value.errno == errno.ENOSPC and "no space left on the disk of" in str(e.value.strerror)
    assert "--resume" in e.value.strerror and "\n" not in e.value.strerror
    assert [p.name for p in tmp_path.iterdir()] == ["step-000001"]


def test_full_disk_while_exporting_names_the_run_folder(tmp_path):
    """The export's full-disk line says what was being written and resumes the run folder itself."""
    class Unet(torch.nn.Linear):
        def save_pretrained(self, path, **kw):
            raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(OSError) as e:
        export_model(out, Proc(), Unet(2, 2), "unet", {})
    assert "(the export needs" in e.value.strerror and e.value.strerror.endswith(
        f"sfv-train --resume {out}; the checkpoints written before are kept"), e.value.strerror
    assert sorted(p.name for p in out.iterdir()) == []


def test_keep_last_and_the_weight_of_a_checkpoint_before_its_first_step(tmp_path):
    model, opt = _parts()
    for step in (1, 2, 3):
        _save(tmp_path, step, Proc(), model, opt, limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-2)           # no state yet: one meta step says it
    # 53 float32 parameters: exp_avg and exp_avg_sq of each, and a float32 step per tensor (4 tensors)
    assert optimizer_state_bytes(fresh) == optimizer_state_bytes(opt) == (2 * 53 + 4) * 4
    sizes = checkpoint_sizes({"model": model}, {"opt": opt})
    assert sizes["model.safetensors"] == 53 * 4
    assert sizes["model.safetensors"] + sizes["opt.pt"] < sum(p.stat().st_size for p in (tmp_path / "step-000003").iterdir())


@pytest.mark.slow
def test_run_keeps_two_checkpoints_and_milestones_and_a_full_disk_is_one_line(run_copy, monkeypatch, capsys):
    """`sfv-train` by default keeps the newest 2 checkpoints, and a milestone export every --milestone-every
    steps; on a full disk it says so in one line (exit 1), the checkpoints before kept, nothing half-written."""
    from bench.cli import train_main

    assert train_main(["--resume", str(run_copy), "--max-steps", "3", "--milestone-every", "3"]) == 0
    out = capsys.readouterr().out
    assert "one checkpoint weighs" in out and "keeping the newest 2" in out
    kept = ["step-000002", "step-000003"]
    assert [p.name for p in list_checkpoints(run_copy / "checkpoints")] == kept
    assert sorted(p.name for p in (run_copy / "milestones").iterdir()) == ["step-000003"]
    assert (run_copy / "milestones" / "step-000003" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    fill_disk_for("optimizer_g.pt", monkeypatch)
    assert train_main(["--resume", str(run_copy), "--max-steps", "4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sfv-train: error: no space left on the disk of"), err
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == kept
