#!/usr/bin/env bash
# The GPU figures of issue 24 in one run (under 5 minutes on a CUDA or Apple MPS machine): prints a table and
# writes docs/bench/gpu.json.  Arguments go to `python -m benchmarks.gpu` (--help lists them; --dry runs toy
# sizes on any device).  Uses the repository's .venv when there is one, else python3 from PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=python3
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" -m benchmarks.gpu "$@"
