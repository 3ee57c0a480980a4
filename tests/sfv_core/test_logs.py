"""The console of `sfv_core.logs`: plain messages on stdout, warnings on stderr, the main process only."""
from __future__ import annotations

import logging

import pytest

from sfv_core.logs import ConsoleHandler, setup_console


@pytest.fixture
def console(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SFV_LOG_RANKS", raising=False)
    monkeypatch.delenv("SFV_LOG_LEVEL", raising=False)
    setup_console()
    yield logging.getLogger("bench.some_module")
    for name in ("RANK", "SFV_LOG_RANKS", "SFV_LOG_LEVEL"):    # a test's own setting must not outlive it
        monkeypatch.delenv(name, raising=False)
    setup_console()


def test_info_is_the_plain_message_on_stdout_and_warnings_go_to_stderr(console, capsys):
    console.info("step 3: loss 0.5")
    console.warning("warning: disk nearly full")
    out, err = capsys.readouterr()
    assert out == "step 3: loss 0.5\n" and err == "warning: disk nearly full\n"


def test_setup_twice_prints_each_message_once(console, capsys):
    setup_console()
    console.info("once")
    assert capsys.readouterr().out == "once\n"
    for name in ("bench", "sfv_train", "methods", "sfv_core"):
        assert sum(isinstance(h, ConsoleHandler) for h in logging.getLogger(name).handlers) == 1


def test_other_processes_are_quiet_unless_asked(console, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    console.info("from rank 1")
    console.warning("a rank 1 warning")
    console.error("a rank 1 error")
    out, err = capsys.readouterr()
    assert out == "" and err == "[rank 1] a rank 1 error\n"
    monkeypatch.setenv("SFV_LOG_RANKS", "all")
    console.info("from rank 1")
    assert capsys.readouterr().out == "[rank 1] from rank 1\n"


def test_the_level_is_set_by_the_environment(console, capsys, monkeypatch):
    monkeypatch.setenv("SFV_LOG_LEVEL", "warning")
    setup_console()
    console.info("hidden")
    console.warning("shown")
    out, err = capsys.readouterr()
    assert out == "" and err == "shown\n"
