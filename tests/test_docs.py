"""The documentation stands alone: every file a source or page cites exists, every cited anchor exists,
nothing cites a file outside the repository, and docs/methods.md is what `sfv-bench ls` prints."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"runs", "__pycache__", "build", "dist", "node_modules"}
# Written in pieces so that this file does not match itself.
OUTSIDE = re.compile(r"\b" + "FAC" + r"TS\b|\.\./" + "shared/|sf-v-" + "paper\\.md")


def _kept(name: str) -> bool:
    return not (name.startswith(".") or name in SKIP_DIRS or name.endswith(".egg-info"))


def _text_files() -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if _kept(d))
        out += [Path(folder) / f for f in sorted(files) if f.endswith((".py", ".md"))]
    return out


def _top_dirs() -> list[str]:
    return sorted(d.name for d in ROOT.iterdir() if d.is_dir() and _kept(d.name))


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M)}


def _cited_paths(text: str) -> list[tuple[str, str]]:
    """(path, anchor) of every repository path with a file extension that the text names."""
    dirs = "|".join(re.escape(d) for d in _top_dirs())
    pat = re.compile(rf"(?<![\w./-])((?:{dirs})/[\w./-]*\w\.[A-Za-z0-9]+)(?:#([\w-]+))?")
    return [(m.group(1), m.group(2) or "") for m in pat.finditer(text)]


def _links(page: Path) -> list[tuple[Path, str]]:
    """Relative Markdown links of a page: (target, anchor); '#x' alone is an anchor on the page itself."""
    out = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        out.append(((page.parent / path) if path else page, anchor))
    return out


def test_nothing_cites_a_file_outside_the_repository():
    bad = [f"{f.relative_to(ROOT)}:{n}" for f in _text_files()
           for n, line in enumerate(f.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not bad, f"cite docs/reference.md or the public source instead: {bad}"


def test_every_cited_path_and_anchor_exists():
    missing = []
    for f in _text_files():
        cited = [(ROOT / p, a) for p, a in _cited_paths(f.read_text())]
        if f.suffix == ".md":
            cited += _links(f)
        for path, anchor in sorted(set(cited)):
            path = path.resolve()
            where = f"{f.relative_to(ROOT)} -> {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
            if not path.exists():
                missing.append(where)
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                missing.append(f"{where}#{anchor}")
    assert not missing, f"cited but absent: {missing}"


def test_the_checks_catch_what_they_guard():
    assert slug("Protocol of Table 1") == "protocol-of-table-1" and slug("`--r1` and memory") == "--r1-and-memory"
    absent = "bench" + "/no_such_file.py"
    assert _cited_paths(f"see docs/reference.md#edm-preconditioning and {absent}, not OUT/y.md") == [
        ("docs/reference.md", "edm-preconditioning"), (absent, "")]
    assert OUTSIDE.search("(" + "FAC" + "TS sec. 3)") and not OUTSIDE.search("FACTORS_SIGMAS")
    assert "edm-preconditioning" in anchors(ROOT / "docs" / "reference.md")


def test_methods_page_is_what_sfv_bench_ls_prints():
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_methods.py"), "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_readme_is_short_and_its_two_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ["python3 dev.py run", "python3 dev.py test"]
    assert "exec python3 dev.py test" in (ROOT / ".ci" / "run").read_text()
    assert len(readme.splitlines()) <= 150


def test_readme_headline_table_is_the_recorded_default_run():
    import json

    records = [json.loads(line) for line in (ROOT / "results/runs/mini-default/results.jsonl").read_text().splitlines()
               if line.strip()]
    rows = {r["spec"]: r for r in records}
    readme = (ROOT / "README.md").read_text()
    shown = {m.group(1): (m.group(2), m.group(3)) for m in
             re.finditer(r"^\| [^|]+ \| [^|]+ \| (\S+) \| ([\d.]+) (\[[^\]]+\]) \|", readme, flags=re.M)}
    assert set(shown) == set(rows)
    for spec, (fvd, interval) in shown.items():
        lo, hi = rows[spec]["fvd_interval"]
        assert (fvd, interval) == (f"{rows[spec]['fvd']:.2f}", f"[{lo:.2f}, {hi:.2f}]"), spec
