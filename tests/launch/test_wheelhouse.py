"""The wheelhouse: which packages it carries against a base image, and an install from it with no index.

The install test builds a wheelhouse for this machine's Python against a *base image* made from this environment:
every installed package except nemo_salad itself and one small pure-Python dependency of NeMo's (``wget``). The
builder must carry exactly those two (nemo_salad built from this checkout,
``wget`` fetched from a local find-links folder: no index), ``install.sh --wheelhouse`` must install them over the
base into a fresh environment with no index, and that environment must import both from its own site-packages and
run a tiny Stage I training step.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.helpers.tiny import make_tokenizer
from tests.helpers.tone_speech import random_sentences, tone_cuts

ROOT = Path(__file__).resolve().parents[2]


def _load_builder():
    spec = importlib.util.spec_from_file_location("wheelhouse", ROOT / "scripts" / "wheelhouse.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["wheelhouse"] = module
    spec.loader.exec_module(module)
    return module


wh = _load_builder()
PY312 = wh.target_environment("3.12")
PY311 = wh.target_environment("3.11")


def test_freeze_lines(tmp_path):
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("# comment\nTorch==2.11.0\nNumPy===2.5.2  # pinned\nlightning\nfoo @ file:///x.whl\n"
                      "-e git+https://example/x#egg=bar\n\n")
    assert wh.read_freeze(freeze) == {"torch": "2.11.0", "numpy": "2.5.2", "lightning": None}
    freeze.write_text("torch==2.11.0\ntorch>=2\n")
    with pytest.raises(ValueError, match=r"freeze.txt:2: expected 'name==version'"):
        wh.read_freeze(freeze)


INSTALLED = {
    "app": ("1.0", ["lib>=2", "old-backport; python_version < '3.12'", "plugin; extra == 'tts'",
                    "never; extra == 'other'", "bloat"]),
    "lib": ("2.5", ["tiny<2"]),
    "old-backport": ("1.0", []),
    "plugin": ("0.3", ["lib<3", "heavy"]),
    "tiny": ("1.4", []),
    "never": ("9", []),
    "bloat": ("1", ["bloat-dep"]),
    "bloat-dep": ("1", []),
    "heavy": ("5", []),
}


def test_closure_follows_markers_for_the_target_python():
    names = set(wh.closure(["app"], INSTALLED, PY312))
    assert names == {"app", "lib", "tiny", "bloat", "bloat-dep"}
    assert "old-backport" in wh.closure(["app"], INSTALLED, PY311)


def test_closure_follows_requested_extras_and_omits_subtrees():
    needs = wh.closure(["app[tts]"], INSTALLED, PY312, omit=["Bloat"])
    assert set(needs) == {"app", "lib", "tiny", "plugin", "heavy"}
    assert needs["lib"].wanted_by == (("app", ">=2"), ("plugin", "<3"))
    with pytest.raises(LookupError, match="app needs missing>=1 but missing is not installed"):
        wh.closure(["app"], {**INSTALLED, "app": ("1.0", ["missing>=1"])}, PY312)


def test_plan_carries_what_the_base_lacks_or_has_in_a_refused_version():
    needs = wh.closure(["app[tts]"], INSTALLED, PY312)
    base = {"lib": "3.1",        # refused by plugin's lib<3 once plugin is carried
            "tiny": "1.9",       # admitted by lib's tiny<2
            "heavy": None,       # version unknown, nothing bounds it: the base's does
            "bloat": "0.1"}      # any version does
    result = wh.plan(needs, base, PY312, always=["app"])
    carried = {d.name: d.reason for d in result.carried}
    assert carried == {"app": "built from this checkout",
                       "plugin": "not in the base image (for app)",
                       "lib": "base has 3.1: plugin needs <3",
                       "bloat-dep": "not in the base image (for bloat)"}
    assert {d.name for d in result.excluded} == {"tiny", "heavy", "bloat"}
    # An unknown base version under an upper bound of a carried package is not trusted.
    result = wh.plan(needs, {**base, "tiny": None}, PY312, always=["app"])
    assert {d.name: d.reason for d in result.carried}["tiny"] == "base version unknown: lib needs <2"


def test_plan_leaves_the_base_image_s_own_requirements_to_it():
    needs = wh.closure(["app[tts]"], INSTALLED, PY312)
    base = {"lib": "3.1", "tiny": None, "heavy": None, "bloat": "0.1", "plugin": None}
    result = wh.plan(needs, base, PY312, always=["app"])
    # plugin comes with the base, so its lib<3 is the base's affair; lib 3.1 meets app's lib>=2.
    assert [d.name for d in result.carried] == ["app", "bloat-dep"]


def test_the_real_closure_has_the_stack_and_honours_the_omit_list():
    installed = wh.installed_here()
    needs = wh.closure(["nemo_salad[piper]"], installed, PY312)
    assert {"torch", "nemo-toolkit", "megatron-core", "lhotse", "transformers", "piper-tts"} <= set(needs)
    assert needs["transformers"].version == metadata.version("transformers")
    omit = wh.read_omit(ROOT / "requirements" / "wheelhouse-omit.txt")
    pruned = wh.closure(["nemo_salad[piper]"], installed, PY312, omit)
    assert not set(omit) & set(pruned)
    assert {"torch", "nemo-toolkit", "megatron-core", "lhotse"} <= set(pruned)


def test_split_fills_parts_up_to_the_cap(tmp_path):
    for name, size in {"a": 70, "b": 60, "c": 40, "d": 30, "e": 5}.items():
        (tmp_path / f"{name}-1-py3-none-any.whl").write_bytes(b"x" * size)
    parts = wh.split(tmp_path, max_mib=100 / 2**20)  # a 100-byte cap
    contents = [sorted(p.name[0] for p in part.glob("*.whl")) for part in parts]
    assert contents == [["a", "d"], ["b", "c"], ["e"]]  # largest first, each into the first part it fits
    assert all(sum(p.stat().st_size for p in part.glob("*.whl")) <= 100 for part in parts)
    (tmp_path / "huge-1-py3-none-any.whl").write_bytes(b"x" * 101)
    with pytest.raises(ValueError, match="huge-1-py3-none-any.whl is"):
        wh.split(tmp_path, max_mib=100 / 2**20)


def _repack(dist: metadata.Distribution, out: Path) -> Path:
    """A wheel of an installed pure-Python distribution, from the files its RECORD lists (offline stand-in for a
    download from an index)."""
    wheel_tag = (Path(dist._path) / "WHEEL").read_text()  # type: ignore[attr-defined]
    assert "Root-Is-Purelib: true" in wheel_tag
    name = dist.metadata["Name"].replace("-", "_")
    path = out / f"{name}-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for f in dist.files or []:
            if f.parts[0] in ("..", "__pycache__") or f.suffix == ".pyc":
                continue
            zf.write(f.locate(), str(f))
    return path


def _base_environment(tmp_path: Path, hidden: set[str]) -> Path:
    """A virtual environment whose packages are this environment's, minus the distributions in ``hidden``
    (canonical names): a folder of links to the site-packages entries, added with a .pth file. An entry shared
    with a distribution that is not hidden (a namespace package) stays."""
    site = Path(sysconfig.get_paths()["purelib"])
    owners: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        for f in dist.files or []:
            if f.parts[0] not in ("..", "__pycache__"):
                owners.setdefault(f.parts[0], set()).add(name)
    hide = {entry for entry, names in owners.items() if names <= hidden}
    hide |= {p.name for p in site.glob("__editable__*nemo_salad*")}
    farm = tmp_path / "base-site"
    farm.mkdir()
    for entry in site.iterdir():
        if entry.name not in hide and entry.name != "__pycache__":
            (farm / entry.name).symlink_to(entry)
    base = tmp_path / "base"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base)], check=True)
    base_site = next((base / "lib").glob("python3.*")) / "site-packages"
    (base_site / "_farm.pth").write_text(f"import site; site.addsitedir({str(farm)!r})\n")
    return base


IMPORT_SWEEP = """
import importlib, pkgutil
from nemo_salad.llm.cpu import guard_unified_memory_import
guard_unified_memory_import()
names = ["nemo.collections.asr", "nemo.collections.asr.models", "nemo.collections.asr.modules",
         "nemo.collections.tts.models", "nemo.collections.llm", "nemo.collections.llm.modelopt.distill",
         "nemo.collections.speechlm2", "nemo.lightning", "nemo_run", "megatron.core.dist_checkpointing"]
for name in names:  # first: a failed import that some module swallows must not hide a missing package
    importlib.import_module(name)
import nemo_salad
for m in pkgutil.walk_packages(nemo_salad.__path__, "nemo_salad."):
    importlib.import_module(m.name)
"""


@pytest.mark.slow
def test_install_from_a_wheelhouse_with_no_index(tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    _repack(metadata.distribution("wget"), links)
    freeze = subprocess.run([sys.executable, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
                            check=True, capture_output=True, text=True).stdout.splitlines()
    freeze = [line for line in freeze if not line.lower().startswith(("nemo_salad", "nemo-salad", "wget"))]
    base_freeze = tmp_path / "base-freeze.txt"
    base_freeze.write_text("\n".join(freeze) + "\n")
    house = tmp_path / "house"
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_NO_CACHE_DIR": "1"}
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "wheelhouse.py"), "build", str(house), "--python", ver,
                    "--base-freeze", str(base_freeze), "--pip-arg=--no-index", f"--pip-arg=--find-links={links}"],
                   check=True, env=env, timeout=600)
    manifest = json.loads((house / "wheelhouse.json").read_text())
    assert {d["name"] for d in manifest["carried"]} == {"nemo-salad", "wget"}
    assert sorted(p.name.split("-")[0] for p in house.glob("*.whl")) == ["nemo_salad", "wget"]

    omitted = set(wh.read_omit(ROOT / "requirements" / "wheelhouse-omit.txt"))
    base = _base_environment(tmp_path, hidden={"nemo-salad", "wget"} | omitted)
    fresh = tmp_path / "fresh"
    out = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--wheelhouse", str(house)],
                         env={**env, "SALAD_PYTHON": str(base / "bin" / "python"), "SALAD_VENV": str(fresh)},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    fresh_site = next((fresh / "lib").glob("python3.*")) / "site-packages"
    where = subprocess.run([str(fresh / "bin" / "python"), "-c",
                            "import nemo_salad, wget; print(nemo_salad.__file__); print(wget.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert all(Path(p).is_relative_to(fresh_site) for p in where), where
    # Nothing nemo_salad or the NeMo collections it builds on import needs an omitted package.
    sweep = subprocess.run([str(fresh / "bin" / "python"), "-c", IMPORT_SWEEP], capture_output=True, text=True,
                           cwd=tmp_path, timeout=600, env={**env, "OMP_NUM_THREADS": "1"})
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]

    corpus = tmp_path / "tone"
    tone_cuts(random_sentences(8, seed=0), corpus / "train").to_file(corpus / "train.jsonl.gz")
    tone_cuts(random_sentences(4, seed=1), corpus / "val", prefix="val").to_file(corpus / "val.jsonl.gz")
    (corpus / "replay.jsonl").write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n"
                                                 for i, t in enumerate(random_sentences(20, seed=2))))
    make_tokenizer(corpus / "tok")
    from tests.training.conftest import tiny_overrides

    overrides = tiny_overrides(corpus, tmp_path / "exp", max_steps=2) + ["trainer.val_check_interval=2"]
    run = subprocess.run([str(fresh / "bin" / "python"), str(ROOT / "examples" / "salad_train.py"),
                          "--config-name=stage1", *overrides],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert list((tmp_path / "exp").rglob("*.ckpt")) or list((tmp_path / "exp").rglob("step=2*")), \
        sorted(str(p) for p in (tmp_path / "exp").rglob("*"))[:50]
