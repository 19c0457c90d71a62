"""Build a wheelhouse: every wheel nemo_salad needs on an air-gapped node, minus what its base image provides.

    python scripts/wheelhouse.py build DIR [--python 3.12] [--platform manylinux_2_28_x86_64]
                                           [--base-freeze FREEZE.txt] [--assets] [--dry-run]
    python scripts/wheelhouse.py split DIR [--max-mib 60]   # parts for size-capped transfers
    bash scripts/install.sh --wheelhouse DIR          # on the node: no index, --no-deps

What is needed is the dependency closure of ``nemo_salad[all]`` as installed in *this* environment (the pins of
``requirements/constraints.txt`` already applied by ``scripts/install.sh``), with every environment marker
evaluated for the *target* Python and platform. A needed package is left out when the base image's ``pip freeze``
has a version that every requirement on it admits; otherwise the version installed here is carried. Carried
packages are downloaded as wheels for the target (``pip download --only-binary=:all:``); a package published only as
an sdist is downloaded and built into a wheel, which must come out pure Python (``py3-none-any``). nemo_salad's own
wheel is built from this checkout. ``DIR/wheelhouse.json`` records every decision and its reason.

Run it with the environment that ``scripts/install.sh`` made (``.venv/bin/python scripts/wheelhouse.py ...``).
Only the standard library, ``packaging`` and pip are used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
#: The platform tags pip accepts for a glibc-2.28 x86-64 node, newest first (pip matches each tag exactly).
MANYLINUX_X86_64 = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + ["manylinux2014_x86_64",
                                                                             "manylinux1_x86_64", "linux_x86_64"]


@dataclass(frozen=True)
class Need:
    """One package of the closure: the version installed here and who asks for it with which specifier."""

    name: str
    version: str
    wanted_by: tuple[tuple[str, str], ...]  # (requirer, specifier string; "" = any version)


@dataclass
class Decision:
    name: str
    version: str
    carry: bool
    reason: str


@dataclass
class Plan:
    target: dict[str, str]
    carried: list[Decision] = field(default_factory=list)
    excluded: list[Decision] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"target": self.target, "carried": [asdict(d) for d in self.carried],
                "excluded": [asdict(d) for d in self.excluded]}


def target_environment(python: str, machine: str = "x86_64", system: str = "Linux") -> dict[str, str]:
    """Marker environment (PEP 508) of a CPython ``python`` (``"3.12"`` or ``"3.12.3"``) node."""
    parts = python.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--python: expected a version like 3.12, got {python!r}")
    env = dict(default_environment())
    env.update(python_version=".".join(parts[:2]), python_full_version=".".join((parts + ["0"])[:3]),
               implementation_name="cpython", platform_python_implementation="CPython",
               sys_platform=system.lower(), platform_system=system, platform_machine=machine, os_name="posix")
    return env


def read_freeze(path: Path) -> dict[str, str | None]:
    """``pip freeze`` / ``pip list --format=freeze`` output → {canonical name: version}. A bare ``name`` line means
    "installed, version unknown" (None); ``name @ url`` and editable lines are skipped; any other line that is not
    ``name==version`` is an error naming the file and line."""
    out: dict[str, str | None] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-e ") or " @ " in line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\s*===?\s*([^\s;]+))?", line)
        if not m:
            raise ValueError(f"{path}:{n}: expected 'name==version' or 'name' (pip freeze), got {raw!r}")
        out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def closure(roots: Iterable[str], installed: Mapping[str, tuple[str, list[str]]],
            env: Mapping[str, str], omit: Iterable[str] = ()) -> dict[str, Need]:
    """The packages ``roots`` need in ``env``.

    ``installed``: {canonical name: (version, Requires-Dist lines)} of the environment the pins were resolved in.
    A requirement whose marker is false for ``env`` (for its requirer's requested extras) is not followed, nor one
    on a package named in ``omit`` (declared, but not needed to run nemo_salad). A requirement on a package that is
    not installed here is an error: the source environment must be complete.
    """
    omit = {canonicalize_name(o) for o in omit}
    wanted: dict[str, list[tuple[str, str]]] = {}
    extras_of: dict[str, set[str]] = {}
    queue: list[tuple[str, Requirement]] = [("(root)", Requirement(r)) for r in roots]
    while queue:
        requirer, req = queue.pop()
        name = canonicalize_name(req.name)
        if name in omit:
            continue
        if name not in installed:
            raise LookupError(f"{requirer} needs {req} but {name} is not installed in this environment; "
                              "run scripts/install.sh first and build the wheelhouse with its python")
        spec = str(req.specifier)
        first = name not in wanted
        wanted.setdefault(name, [])
        if (requirer, spec) not in wanted[name]:
            wanted[name].append((requirer, spec))
        new_extras = set(req.extras) - extras_of.get(name, set())
        if not first and not new_extras:
            continue
        extras_of.setdefault(name, set()).update(req.extras)
        for line in installed[name][1]:
            dep = Requirement(line)
            active = ([""] if first else []) + sorted(new_extras)
            if dep.marker is None:
                if first:
                    queue.append((name, dep))
                continue
            if any(dep.marker.evaluate({**env, "extra": e}) for e in active):
                queue.append((name, dep))
    return {n: Need(n, installed[n][0], tuple(sorted(w))) for n, w in wanted.items()}


def _admits(spec: str, version: str) -> bool:
    if not spec:
        return True
    try:
        return Requirement(f"x{spec}").specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _bounds_above(spec: str) -> bool:
    return any(s.operator in ("<", "<=", "==", "~=", "===") for s in Requirement(f"x{spec}").specifier)


def plan(needs: Mapping[str, Need], base: Mapping[str, str | None], env: Mapping[str, str],
         always: Iterable[str] = ()) -> Plan:
    """Carry what the base lacks or has in a version some requirement refuses; leave out the rest.

    Only the requirements of carried packages (and of the roots) count: a base package's own requirements are the
    base image's business, met by its own versions. A base package of unknown version is left out unless such a
    requirement bounds it from above or pins it (``<``, ``<=``, ``==``, ``~=``, ``===``): a current image meets
    lower bounds, and ``pip check`` after the install says if it does not.
    """
    always = {canonicalize_name(a) for a in always}
    reasons: dict[str, str] = {}
    for name, need in needs.items():  # carried whatever else is decided
        if name in always:
            reasons[name] = "built from this checkout"
        elif name not in base:
            who = ", ".join(sorted({w for w, _ in need.wanted_by}))
            reasons[name] = f"not in the base image (for {who})"
    changed = True
    while changed:  # a carried package's requirements may refuse more of the base: to a fixed point
        changed = False
        for name, need in needs.items():
            if name in reasons:
                continue
            have = base[name]
            counted = [(w, spec) for w, spec in need.wanted_by if w == "(root)" or w in reasons]
            if have is None:
                bad = [(w, spec) for w, spec in counted if _bounds_above(spec)]
                prefix = "base version unknown: "
            else:
                bad = [(w, spec) for w, spec in counted if not _admits(spec, have)]
                prefix = f"base has {have}: "
            if bad:
                reasons[name] = prefix + "; ".join(f"{w} needs {spec}" for w, spec in bad)
                changed = True
    result = Plan(target={k: env[k] for k in ("python_full_version", "sys_platform", "platform_machine")})
    for name in sorted(needs):
        if name in reasons:
            result.carried.append(Decision(name, needs[name].version, True, reasons[name]))
        else:
            have = base[name]
            result.excluded.append(Decision(name, have or "?", False, f"base has {have}" if have
                                            else "in the base image (its version is not constrained)"))
    return result


def installed_here() -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, Requires-Dist)} of the running interpreter's environment."""
    out: dict[str, tuple[str, list[str]]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonicalize_name(name), (dist.version, list(dist.requires or [])))
    return out


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def _is_pure(wheel: Path) -> bool:
    return wheel.name.endswith(("-none-any.whl",))


def read_omit(path: Path) -> list[str]:
    """Names, one per line (``#`` comments) → canonical names."""
    names = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [canonicalize_name(n) for n in names if n]


def fetch(decisions: list[Decision], out: Path, python: str, platforms: list[str], pip_args: list[str]) -> list[str]:
    """Download (or build) one wheel per carried package into ``out``; returns the packages that failed, each with
    its reason (the others are still fetched)."""
    failed = []
    for d in decisions:
        try:
            _fetch_one(d, out, python, platforms, pip_args)
        except (subprocess.CalledProcessError, RuntimeError) as e:
            failed.append(f"{d.name}=={d.version}: {e}")
    return failed


def _fetch_one(d: Decision, out: Path, python: str, platforms: list[str], pip_args: list[str]) -> None:
    """One wheel of ``d`` for the target into ``out``: a published one, else one built from its sdist (pure only)."""
    py = "".join(python.split(".")[:2])
    if d.reason == "built from this checkout":
        return
    target = [f"--python-version={python}", "--implementation=cp", f"--abi=cp{py}", "--abi=abi3",
              "--abi=none", *(f"--platform={p}" for p in platforms)]
    try:
        _pip("download", "--no-deps", "--only-binary=:all:", *target, "-d", str(out), *pip_args,
             f"{d.name}=={d.version}")
        return
    except subprocess.CalledProcessError:
        print(f"wheelhouse: no wheel of {d.name}=={d.version} for the target; building one from its sdist")
    src = out / ".sdist"
    for f in src.glob("*"):
        f.unlink()
    _pip("download", "--no-deps", "--no-binary=:all:", "-d", str(src), *pip_args, f"{d.name}=={d.version}")
    before = set(out.glob("*.whl"))
    _pip("wheel", "--no-deps", "-w", str(out), *pip_args, *map(str, src.glob("*")))
    for wheel in set(out.glob("*.whl")) - before:
        if not _is_pure(wheel):
            wheel.unlink()
            raise RuntimeError(f"{d.name}=={d.version} has no wheel for Python {python} on {platforms[0]} and "
                               f"its sdist builds a compiled wheel ({wheel.name}); build it on the target")
    for f in src.glob("*"):
        f.unlink()
    src.rmdir()


def build(args: argparse.Namespace) -> Plan:
    out = Path(args.dir)
    env = target_environment(args.python)
    base = read_freeze(Path(args.base_freeze)) if args.base_freeze else {}
    roots = [f"nemo_salad[{args.extras}]" if args.extras else "nemo_salad"]
    installed = installed_here()
    if args.assets:
        assets = [line.split("#")[0].strip() for line in (ROOT / "requirements/assets.txt").read_text().splitlines()]
        roots += [a for a in assets if a]
    omit = read_omit(Path(args.omit)) if args.omit else []
    needs = closure(roots, installed, env, omit)
    result = plan(needs, base, env, always=["nemo_salad"])
    for d in result.carried:
        print(f"carry   {d.name}=={d.version}  ({d.reason})")
    print(f"wheelhouse: {len(result.carried)} to carry, {len(result.excluded)} provided by the base image")
    if args.dry_run:
        return result
    out.mkdir(parents=True, exist_ok=True)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT))
    failed = fetch(result.carried, out, args.python, args.platform or MANYLINUX_X86_64, args.pip_arg)
    (out / "wheelhouse.json").write_text(json.dumps({**result.to_json(), "omitted": omit, "failed": failed},
                                                    indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.glob("*.whl"))
    print(f"wheelhouse: {len(list(out.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {out}")
    if failed:
        raise SystemExit("wheelhouse: no usable wheel for:\n  " + "\n  ".join(failed))
    return result


def split(house: Path, max_mib: float) -> list[Path]:
    """Hard-link the wheels of ``house`` into ``house/part-1``, ``part-2``, ... of at most ``max_mib`` each (largest
    first, each into the first part it fits), for transfers capped in size; each part installs on its own with
    ``--no-deps``, in any order."""
    wheels = sorted(house.glob("*.whl"), key=lambda w: w.stat().st_size, reverse=True)
    cap = max_mib * 2**20
    parts: list[list[Path]] = []
    sizes: list[int] = []
    for w in wheels:
        size = w.stat().st_size
        if size > cap:
            raise ValueError(f"{w.name} is {size / 2**20:.1f} MiB, over the {max_mib} MiB part size")
        i = next((i for i, used in enumerate(sizes) if used + size <= cap), len(parts))
        if i == len(parts):
            parts.append([])
            sizes.append(0)
        parts[i].append(w)
        sizes[i] += size
    out = []
    for i, group in enumerate(parts, 1):
        d = house / f"part-{i}"
        d.mkdir(exist_ok=True)
        for w in group:
            if not (d / w.name).exists():
                os.link(w, d / w.name)
        print(f"{d}: {len(group)} wheels, {sizes[i - 1] / 2**20:.1f} MiB")
        out.append(d)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="download/build the wheels into DIR")
    b.add_argument("dir")
    b.add_argument("--python", default=platform.python_version(), help="target CPython version (e.g. 3.12)")
    b.add_argument("--platform", action="append", help="target platform tag(s) (default: manylinux x86-64)")
    b.add_argument("--base-freeze", help="the base image's `pip freeze`; its packages are not carried when they fit")
    b.add_argument("--extras", default="piper", help="nemo_salad extras to carry (default: piper; '' for none)")
    b.add_argument("--assets", action="store_true", help="also carry requirements/assets.txt (hundreds of MiB)")
    b.add_argument("--omit", default=str(ROOT / "requirements/wheelhouse-omit.txt"),
                   help="packages declared but not needed at run time, not carried (file; '' for none)")
    b.add_argument("--dry-run", action="store_true", help="print the plan only")
    b.add_argument("--pip-arg", action="append", default=[], help="passed to pip download (e.g. --find-links=DIR)")
    sp = sub.add_parser("split", help="hard-link DIR's wheels into parts of at most --max-mib each")
    sp.add_argument("dir")
    sp.add_argument("--max-mib", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.cmd == "split":
        split(Path(args.dir), args.max_mib)
    else:
        build(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
