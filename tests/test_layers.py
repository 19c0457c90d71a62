"""The package layering of ``nemo_salad``: no import cycles, and ``parts`` at the bottom.

Check it with::

    cd /work/main && .venv/bin/python -m pytest -q tests/test_layers.py

The import graph is read from the source with :mod:`ast`, so nothing is imported: every ``import`` and
``from ... import`` statement counts wherever it stands (module level, inside a function, under ``TYPE_CHECKING``),
because a lazy import is still a dependency. Relative imports are resolved; ``from pkg import name`` points at the
module ``pkg.name`` when there is one, else at ``pkg`` itself. Imports of the root package ``nemo_salad`` are
ignored (it holds only ``__version__``).

Intended layering, low to high; a package imports only packages on lower rows, never a peer on its own row::

    parts                     stateless helpers (caching, safe config targets, audio checks, optim); imports no
                              other nemo_salad package
    llm, losses               megatron-core GPT, HF conversion, CPU patches; training objectives
    checkpoint                .nemo / distributed / Lightning checkpoint I/O, init_from; takes the model class as
                              an argument, so it sits below modules (which restore pretrained .nemo encoders with it)
    modules                   nn.Module blocks: encoders, adapters, LoRA
    synthesis                 TTS backends and the Shar writer (NeMo TTS models restored through checkpoint)
    data                      lhotse datasets, the data module, corpora (the demo corpus is synthesized)
    metrics                   the gap factors F and M (measured over data's datasets)
    models                    the LightningModule and the builders of its pieces (models/build.py)
    evaluation, selection     spoken benchmarks (restore a SaladModel); Stage II active selection
    callbacks                 Lightning callbacks
    recipes, launch           entry points shared by examples/ and benchmarks/; job launchers
    study                     the findings study: runs recipes as subprocesses, analyses and reports them

The tests assert the structural rules (no cycle between subpackages, no module cycle inside one, ``parts`` imports
no other subpackage) and :func:`test_follows_the_layering` asserts the table, so that a new upward import is either
a mistake or a deliberate change of :data:`LAYERS` and this docstring. Re-exports left at an old path while another
change finishes (:data:`TEMPORARY_SHIMS`) are exempt, and only the files named there may import them.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = "nemo_salad"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / ROOT

# Low to high; packages on one row are peers and must not import each other (see the module docstring).
LAYERS: list[tuple[str, ...]] = [
    ("parts",),
    ("llm", "losses"),
    ("checkpoint",),
    ("modules",),
    ("synthesis",),
    ("data",),
    ("metrics",),
    ("models",),
    ("evaluation", "selection"),
    ("callbacks",),
    ("recipes", "launch"),
    ("study",),
]

# Re-exports left at a moved module's old path for files that another change is rewriting: shim -> the only
# modules allowed to import it. Their own (upward) imports are not counted; delete the entry with the shim.
TEMPORARY_SHIMS: dict[str, frozenset[str]] = {}


def module_name(path: Path, root: Path | None = None) -> str:
    """The dotted name of the module in ``path``.

    >>> module_name(PACKAGE_DIR / "data" / "__init__.py")
    'nemo_salad.data'
    """
    parts = list(path.relative_to((root or PACKAGE_DIR).parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path | None = None) -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    root = root or PACKAGE_DIR
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The ``nemo_salad`` modules that the module ``name`` (in ``path``) imports anywhere in its body.

    Args:
        name (str): the module's dotted name.
        path (Path): its source file.
        modules (Iterable[str]): every module of the package, to tell ``from pkg import module`` from
            ``from pkg import attribute``.

    Returns:
        set[str]: dotted names of imported ``nemo_salad`` modules (the root package itself left out).
    """
    known = set(modules)
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in known else base)
    return {t for t in targets if t.startswith(ROOT + ".") and t != name}


def _nearest_known(target: str, known: set[str]) -> str:
    """``import nemo_salad.a.b`` of a name that is not a module maps to its closest enclosing module."""
    while target not in known and "." in target:
        target = target.rpartition(".")[0]
    return target


def module_graph(root: Path | None = None, shims: Iterable[str] = ()) -> dict[str, set[str]]:
    """Module-level import graph of the package: module -> modules it imports (none for the ``shims``)."""
    modules = discover(root)
    known = set(modules)
    skip = set(shims)
    graph = {}
    for name, path in modules.items():
        imported = set() if name in skip else imports_of(name, path, known)
        graph[name] = {_nearest_known(t, known) for t in imported} - {name, ROOT}
    return graph


@functools.cache
def checked_graph() -> dict[str, set[str]]:
    """The graph the rules apply to: ``nemo_salad`` with the temporary shims' own imports left out."""
    return module_graph(shims=TEMPORARY_SHIMS)


def subpackage(module: str) -> str | None:
    """``nemo_salad.data.demo`` -> ``data``; the root package -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def package_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Subpackage graph: package -> imported package -> the module edges that make the dependency."""
    packages: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for src, dsts in graph.items():
        a = subpackage(src)
        if a is None:
            continue
        packages.setdefault(a, {})
        for dst in sorted(dsts):
            b = subpackage(dst)
            if b is not None and b != a:
                packages[a].setdefault(b, []).append((src, dst))
    return packages


def find_cycles(graph: dict[str, Iterable[str]]) -> list[list[str]]:
    """Cycles of a directed graph, as closed paths: a shortest one through each node that lies on any.

    >>> find_cycles({"a": ["b"], "b": ["a"], "c": ["a"]})
    [['a', 'b', 'a']]
    """
    nodes = sorted(set(graph) | {d for ds in graph.values() for d in ds})
    adj = {n: sorted(set(graph.get(n, ()))) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adj[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(sorted(component))

    for n in nodes:
        if n not in index:
            strongconnect(n)

    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for component in sorted(components):
        members = set(component)
        if len(component) == 1 and component[0] not in adj[component[0]]:
            continue
        for node in component:  # a shortest cycle through each member, so that every back edge shows
            cycle = _cycle_through(node, adj, members)
            i = cycle.index(min(cycle[:-1]))
            key = tuple(cycle[i:-1] + cycle[:i])
            if key not in seen:
                seen.add(key)
                cycles.append(cycle)
    return cycles


def _cycle_through(start: str, adj: dict[str, list[str]], members: set[str]) -> list[str]:
    """A shortest closed path from ``start`` back to itself inside one strongly connected component."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in adj[v]:
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a cycle but no path back was found")


def _explain(cycle: list[str], packages: dict[str, dict[str, list[tuple[str, str]]]]) -> str:
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        edges = packages[a][b]
        shown = ", ".join(f"{s} -> {d}" for s, d in edges[:4])
        lines.append(f"  {a} -> {b}: {shown}" + (f" (+{len(edges) - 4} more)" if len(edges) > 4 else ""))
    return "\n".join(lines)


def test_no_cycle_between_subpackages():
    packages = package_graph(checked_graph())
    cycles = find_cycles({a: list(bs) for a, bs in packages.items()})
    assert not cycles, "import cycles between nemo_salad subpackages:\n" + "\n".join(
        _explain(c, packages) for c in cycles)


def test_no_module_cycle_within_a_subpackage():
    graph = checked_graph()
    cycles = []
    for package in sorted({subpackage(m) for m in graph} - {None}):
        members = {m for m in graph if subpackage(m) == package}
        cycles += find_cycles({m: graph[m] & members for m in members})
    assert not cycles, "module import cycles inside a nemo_salad subpackage:\n" + "\n".join(
        " -> ".join(c) for c in cycles)


def test_parts_imports_no_other_subpackage():
    edges = package_graph(checked_graph()).get("parts", {})
    assert not edges, "nemo_salad.parts must import only nemo_salad.parts; found:\n" + "\n".join(
        f"  {s} -> {d}" for deps in edges.values() for s, d in deps)


def test_follows_the_layering():
    rank = {package: i for i, row in enumerate(LAYERS) for package in row}
    packages = package_graph(checked_graph())
    unknown = sorted(set(packages) - set(rank))
    assert not unknown, f"subpackages {unknown} have no row in LAYERS; add them to LAYERS and the module docstring"
    bad = [
        f"  {a} (row {rank[a]}) -> {b} (row {rank[b]}): " + ", ".join(f"{s} -> {d}" for s, d in edges)
        for a, deps in sorted(packages.items()) for b, edges in sorted(deps.items())
        if rank[b] >= rank[a]
    ]
    assert not bad, "imports that go up or sideways in the layering (see LAYERS):\n" + "\n".join(bad)


def test_temporary_shims_are_imported_only_by_the_files_they_wait_for():
    graph = module_graph()
    gone = sorted(s for s in TEMPORARY_SHIMS if s not in graph)
    assert not gone, f"shims {gone} were deleted: remove them from TEMPORARY_SHIMS in {Path(__file__).name}"
    misuse = [f"  {src} -> {shim} (import its new home instead)" for src, dsts in sorted(graph.items())
              for shim in sorted(dsts & set(TEMPORARY_SHIMS)) if src not in TEMPORARY_SHIMS[shim]]
    assert not misuse, "modules importing a temporary re-export:\n" + "\n".join(misuse)
    unused = sorted(s for s in TEMPORARY_SHIMS if not any(s in dsts for dsts in graph.values()))
    assert not unused, f"nothing imports {unused} any more: delete them and their TEMPORARY_SHIMS entries"


def module_level_effects(path: Path) -> list[str]:
    """Statements that run when the module in ``path`` is imported and may change global state: a bare call
    (``patch()``), an assignment to an attribute or item (``torch.cuda.synchronize = ...``,
    ``os.environ[k] = ...``), a loop, ``with``, ``del`` or ``global``. Imports, definitions, docstrings, plain name
    assignments and the ``if __name__ == "__main__":`` block are not effects.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "m.py"
    >>> _ = f.write_text("import os\\nX = 1\\nos.environ['A'] = '1'\\nprint(X)\\n")
    >>> [line.split(": ", 1)[1] for line in module_level_effects(f)]
    ["os.environ['A'] = '1'", 'print(X)']
    """
    found: list[str] = []

    def plain(target: ast.expr) -> bool:
        return isinstance(target, ast.Name) or (isinstance(target, ast.Tuple) and all(map(plain, target.elts)))

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                          | ast.Pass):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue
            if isinstance(node, ast.Assign) and all(map(plain, node.targets)):
                continue
            if isinstance(node, ast.AnnAssign | ast.AugAssign) and plain(node.target):
                continue
            if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.If):
                visit(node.body + node.orelse)
                continue
            if isinstance(node, ast.Try):
                visit(node.body + [s for h in node.handlers for s in h.body] + node.orelse + node.finalbody)
                continue
            found.append(f"{path}:{node.lineno}: {ast.unparse(node).splitlines()[0]}")

    visit(ast.parse(path.read_text(), filename=str(path)).body)
    return found


def test_importing_a_module_changes_no_global_state():
    """Patches, environment variables and logging settings are applied by explicit calls, never on import."""
    effects = [e for path in discover().values() for e in module_level_effects(path)]
    assert not effects, "module-level statements that run on import (make them explicit calls):\n" + "\n".join(
        effects)


def test_importing_nemo_salad_loads_nothing_heavy():
    """``import nemo_salad`` imports neither torch, NeMo nor megatron-core (so it can patch none of them)."""
    code = ("import sys, nemo_salad; "
            "print(sorted(m for m in ('torch', 'megatron', 'nemo', 'lightning', 'lhotse') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE_DIR.parent)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_finds_a_planted_cycle(tmp_path):
    """The checker itself: a relative import inside a function closes a package cycle and is reported."""
    pkg = tmp_path / ROOT
    for sub in ("a", "b"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from nemo_salad.b import y\n")
    (pkg / "b" / "y.py").write_text("def f():\n    from ..a.x import g\n")
    packages = package_graph(module_graph(pkg))
    assert find_cycles({a: list(bs) for a, bs in packages.items()}) == [["a", "b", "a"]]
