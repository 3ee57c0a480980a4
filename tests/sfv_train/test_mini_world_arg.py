"""The mini world a run uses is an argument (``TrainConfig.mini_world``): the trainer's stack, the FVD
detector while training and the stack resolver read it, not an environment variable set by the caller."""
from __future__ import annotations

import pytest

from sfv_core.errors import UserError
from sfv_train.config import TrainConfig


def _cfg(tmp_path, **kw):
    return TrainConfig(**{"out": str(tmp_path / "o"), "data": str(tmp_path), "stack": "mini",
                          "mini_world": str(tmp_path / "world"), "max_steps": 8, "report_to": "none",
                          "progress": False, "device": "cpu", **kw})


def test_the_trainer_loads_the_stack_of_its_mini_world(tmp_path, monkeypatch):
    import methods.models.stacks
    import sfv_train.trainer
    from sfv_train.train import train

    seen = []

    def resolve(spec, mini_world=None):
        seen.append((spec, mini_world))
        raise UserError("stop here")

    monkeypatch.delenv("SFV_MINI_WORLD", raising=False)
    monkeypatch.setattr(sfv_train.trainer, "find_videos", lambda *a: [])
    monkeypatch.setattr(methods.models.stacks, "resolve_stack", resolve)
    with pytest.raises(UserError, match="stop here"):
        train(_cfg(tmp_path, fvd_every=0))
    assert seen == [("mini", str(tmp_path / "world"))]


def test_the_fvd_while_training_loads_the_detector_of_its_mini_world(tmp_path, monkeypatch):
    import sfv_train.evaluation as ev

    seen = []

    def detector(spec, device="cpu", mini_world=None):
        seen.append((spec, mini_world))
        raise UserError("stop here")

    monkeypatch.setattr(ev, "UCF101", lambda root: root)
    monkeypatch.setattr(ev, "select_videos", lambda ds, p: ["a video"])       # the selection: test_fvd_eval.py
    monkeypatch.setattr(ev, "load_detector", detector)
    with pytest.raises(UserError, match="stop here"):
        ev.TrainFVD(_cfg(tmp_path).resolved(), "cpu")
    assert seen == [("mini", str(tmp_path / "world"))]


def test_resolve_stack_and_verified_take_the_world(tmp_path, monkeypatch):
    """A world without a manifest is refused naming the folder it was given (not the shipped one)."""
    from methods.models.stacks import resolve_stack

    monkeypatch.delenv("SFV_MINI_WORLD", raising=False)
    with pytest.raises(UserError, match=f"the mini world is not in {tmp_path / 'world'}"):
        resolve_stack("mini", tmp_path / "world")
