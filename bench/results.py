"""``results.jsonl`` of a run: one record per method spec, accumulated across invocations.

Records carry ``schema`` and ``created``; a later run of a method replaces that method's record and
keeps the others. Reading is forgiving where a kill can leave damage (a truncated last line is
skipped with a warning) and strict otherwise (one line naming the file and the line).
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

from sfv_core.errors import UserError
from sfv_core.fsutil import atomic_write_text

SCHEMA = "sfv-bench-results/2"
# What must agree for records to share one table (and one FVD column): the protocol, the detector, N.
SAME_TABLE = ("metric", "protocol", "detector.sha256", "covariance", "n_real", "world")


def stamp(record: dict) -> dict:
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}


def read_results(run_dir, allow_empty: bool = False) -> list[dict]:
    """The records of ``run_dir/results.jsonl``. A truncated last line (an interrupted write) is skipped
    with a warning; a file left with no complete record is a UserError naming the fix, or [] with
    ``allow_empty`` (a rerun into the folder, which remakes the records)."""
    path = Path(run_dir) / "results.jsonl"
    if Path(run_dir).is_file():
        raise UserError(f"{run_dir} is a file: pass the run folder that holds results.jsonl")
    if not path.exists():
        raise UserError(f"no results.jsonl in {run_dir} (is it a `sfv-bench run` output folder?)")
    lines = path.read_text(errors="replace").splitlines()
    records, cut = [], None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                warnings.warn(f"{path}:{i}: skipped a truncated last line (an interrupted write)", stacklevel=2)
                cut = i
                continue
            raise UserError(f"{path}:{i}: not a JSON record; fix or delete the line") from None
        if not isinstance(rec, dict) or "spec" not in rec:
            raise UserError(f"{path}:{i}: not a `sfv-bench run` record (a JSON object with a 'spec'); "
                            f"fix or delete the line")
        records.append(rec)
    if not records and not allow_empty:
        why = f": its only line, {cut}, was cut mid-write and is skipped" if cut else ""
        raise UserError(f"{path} holds no complete record{why}; rerun `sfv-bench run` with --out {run_dir} "
                        f"to remake it")
    return records


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with the records of ``new`` replacing those of the same spec; order: first appearance."""
    by_spec = {r["spec"]: r for r in old}
    by_spec.update({r["spec"]: r for r in new})
    order = list(dict.fromkeys([r["spec"] for r in old] + [r["spec"] for r in new]))
    return [by_spec[s] for s in order]


def write_results(run_dir, records: list[dict]) -> Path:
    path = Path(run_dir) / "results.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return path


def _field(rec: dict, dotted: str):
    for part in dotted.split("."):
        rec = rec.get(part) if isinstance(rec, dict) else None
    return rec


def check_same_table(groups: list[tuple[str, list[dict]]]) -> None:
    """Refuse to put records of runs with another protocol, detector or N in one table (a UserError
    naming the first differing field and the two runs)."""
    ref_name, ref = groups[0]
    base = next((r for r in ref if r.get("status") == "ok"), ref[0])
    for name, recs in groups[1:]:
        for rec in recs:
            for f in SAME_TABLE:
                if rec.get("status") == "ok" and _field(rec, f) != _field(base, f):
                    raise UserError(f"{name} ({rec['spec']}) and {ref_name} differ in {f} "
                                    f"({_field(rec, f)!r} vs {_field(base, f)!r}): their FVDs do not share a table")
