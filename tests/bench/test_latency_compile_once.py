"""`sfv-bench latency` compiles the UNet once per input shape: the option search's runner of the chosen
configuration is the one timed afterwards (no dynamo reset and recompile between search and timings)."""
from __future__ import annotations

import pytest
import torch

from bench.latency.benchmark import Settings, choose_runner
from bench.latency.models import load_models, make_shape, stack_configs, unet_inputs
from bench.latency.options import option_space


@pytest.fixture
def compile_log(monkeypatch):
    """torch.compile and torch._dynamo.reset replaced by recorders (torch.compile returns the module)."""
    events = []
    made = []

    def fake_compile(model, **kw):
        events.append("compile")
        made.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: events.append("reset"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield events, made
    torch.set_num_threads(n)


def test_chosen_compiled_runner_is_the_searched_one(compile_log):
    events, made = compile_log
    values = {"dtype": "bf16", "compile": "on", "channels_last": "off,on"}     # two compiled candidates
    models, _ = load_models("tiny", None, "cpu")
    inputs = unet_inputs(stack_configs("tiny")["unet"], 1, 2, (4, 4), "cpu", torch.float32)
    s = Settings(shape=make_shape("tiny", 4, 32, 32), tolerance=0.05, warmup=0, repeats=1)
    runner, opts, check = choose_runner(models["unet"], option_space(values, "cpu"), inputs, s)
    assert opts.compile and check["passed"] and runner.opts == opts
    # one compile per candidate, none for the timings; one reset, before the first: a later one would drop
    # the compiled code of the runner kept for the timings
    assert events == ["reset"] + ["compile"] * len(check["candidates"])
    assert runner.fn is made[[c["options"] for c in check["candidates"]].index(opts.to_dict())]
    runner.run({k: (v if k == "timestep" else v.to(runner.dtype)) for k, v in inputs.items()})
    assert events.count("compile") == len(check["candidates"])
