"""dev.py: `run` installs the package without its test/train extras, `test` with them, and a venv
that has them is not set up again for `run`."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _dev(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("dev_under_test", ROOT / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    monkeypatch.setattr(dev, "STAMP", tmp_path / "stamp")
    return dev


def test_run_asks_for_no_extras_and_test_for_both(tmp_path, monkeypatch):
    dev = _dev(tmp_path, monkeypatch)
    asked, ran = [], []
    monkeypatch.setattr(dev, "setup", lambda extras=dev.FULL: asked.append(tuple(extras)))
    monkeypatch.setattr(dev.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or type("R", (), {"returncode": 0}))
    assert dev.main(["run", "--methods", "svd:4"]) == 0 and dev.main(["test", "-k", "fvd"]) == 0
    assert asked == [(), ("test", "train")]
    assert ran[0][1:] == ["run", "--methods", "svd:4"] and ran[1][1:] == ["-m", "pytest", "-k", "fvd"]


def test_stamp_records_the_extras_and_goes_stale_with_the_files(tmp_path, monkeypatch):
    dev = _dev(tmp_path, monkeypatch)
    assert dev._installed_extras() is None                              # never set up
    dev.STAMP.write_text(f"{dev._stamp_value()} ")
    assert dev._installed_extras() == set()                             # `dev.py run`'s install
    dev.STAMP.write_text(f"{dev._stamp_value()} test,train")
    assert dev._installed_extras() == {"test", "train"}
    monkeypatch.setattr(dev, "LOCK", tmp_path / "other-constraints.txt")   # another lock file: stale
    assert dev._installed_extras() is None


def test_setup_returns_early_when_the_extras_are_there_and_installs_the_union(tmp_path, monkeypatch):
    dev = _dev(tmp_path, monkeypatch)
    monkeypatch.setattr(dev, "_py", lambda: Path(sys.executable))   # an existing python
    monkeypatch.setattr(dev, "_torch_ok", lambda: True)
    calls = []
    monkeypatch.setattr(dev, "_run", lambda cmd, **kw: calls.append([str(c) for c in cmd]))
    dev.STAMP.write_text(f"{dev._stamp_value()} test,train")
    dev.setup(())
    dev.setup(dev.FULL)
    assert calls == []                                                   # nothing to install
    dev.STAMP.write_text(f"{dev._stamp_value()} ")
    dev.setup(dev.FULL)
    assert calls[-1][-1] == f"{dev.ROOT}[test,train]" and dev._installed_extras() == {"test", "train"}
    dev.STAMP.write_text("stale test,train")
    dev.setup(())
    assert calls[-1][-1] == str(dev.ROOT) and dev._installed_extras() == set()
