"""Write docs/methods.md from what `sfv-bench ls` prints (the registry is its one source).

    python docs/gen_methods.py            # rewrite docs/methods.md
    python docs/gen_methods.py --check    # exit 1 when docs/methods.md differs (tests/test_docs.py)
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "methods.md"
COMMAND = "python docs/gen_methods.py"

HEAD = f"""# Methods

Generated from `sfv-bench ls` by `{COMMAND}`: run it after changing `methods/registry.py` (a
test fails while this page differs from the registry). How to add one: [adding a method](adding-a-method.md).

A method spec is `NAME[:STEPS]`; options are `--method-option NAME.KEY=VALUE`. Rows of Table 1 and the
flags that load each method's weights: [evaluate](evaluate.md).

```text
"""


def ls_output() -> str:
    """The text `sfv-bench ls` prints, run as a user runs it (its own process, the repository's code)."""
    done = subprocess.run([sys.executable, "-m", "bench", "ls"], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return "\n".join(line.rstrip() for line in done.stdout.strip().splitlines())


def render() -> str:
    return HEAD + ls_output() + "\n```\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"docs/methods.md differs from `sfv-bench ls`: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
