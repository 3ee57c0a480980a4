#!/usr/bin/env bash
# The GPU check on a GPU machine (run from the repository root, the wheels in .whl/ beside the tree):
#   bash benchmarks/device_check.sh "$OUT" [device_check.py options]
# Installs the carried wheels (.whl/*.whl: diffusers, pytorch_optimizer; see device_check.py's
# docstring for how they are made) into /tmp/site, then runs benchmarks/device_check.py.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
exec python3 benchmarks/device_check.py "$@"
