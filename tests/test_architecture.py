"""The import graph of the library is acyclic and follows the layer order

    textutil, version, extras, progress -> onnxrt -> archs (pure data) -> layers -> blocks -> models -> zoo (registration) -> weights
    -> data -> factory
    -> analysis, train -> deploy -> tasks -> the package root -> integrations -> cli (the command line)

(an arrow reads "is imported by"): a module imports only from its own top-level folder (or
root module) or from lower layers, including imports inside functions. A module's layer is
its top-level folder, with one rule: a ``__main__.py`` is what ``python -m <package>`` runs,
the command line, so it is in the ``cli`` layer wherever it lives. Checked on the source with
``ast``, so nothing runs but the parse.
"""

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import mobilenets

ROOT = Path(mobilenets.__file__).parent
LAYERS = [("textutil", "version", "extras", "progress"), "onnxrt", "archs", "layers", "blocks", "models", "zoo", "weights", "data", "factory",
          ("analysis", "train"), "deploy", ("tasks", "search"), "__init__", "integrations", "cli"]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in ((layer,) if isinstance(layer, str) else layer)}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> str:
    """The top-level folder (or root module) of ``module``; ``cli`` for an entry point."""
    if module.split(".")[-1] == "__main__":
        return "cli"
    return module.split(".")[0]


def _imports(path: Path, module: str):
    """(target module, at module level?) for every import of a mobilenets module."""
    tree = ast.parse(path.read_text(), str(path))
    if module == "__init__":
        pkg = []
    else:
        pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "mobilenets":
                target = node.module.partition(".")[2]
            else:
                continue
            if not node.module:  # from . import a, b: submodules, or names of the package
                for a in node.names:
                    sub = ".".join(filter(None, [target, a.name]))
                    is_module = (ROOT / sub.replace(".", "/")).with_suffix(".py").exists() or \
                        (ROOT / sub.replace(".", "/")).is_dir()
                    yield (sub if is_module else target or "__init__"), id(node) in top_level
            else:
                yield target or "__init__", id(node) in top_level
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "mobilenets":
                    yield a.name.partition(".")[2] or "__init__", id(node) in top_level


def _graph():
    edges = {}
    for path in sorted(ROOT.rglob("*.py")):
        mod = _module_name(path)
        edges[mod] = [(t, top) for t, top in _imports(path, mod) if t != mod]
    return edges


def test_every_subpackage_imports():
    for info in pkgutil.walk_packages([str(ROOT)], "mobilenets."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def test_every_folder_has_a_layer():
    """A new top-level folder or root module is placed in LAYERS on purpose."""
    tops = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name != "__pycache__"}
    missing = sorted(t for t in tops if t not in RANK and t != "__main__")
    assert not missing, f"not in LAYERS: {missing}"


def test_imports_follow_the_layer_order():
    bad = []
    for mod, targets in _graph().items():
        src = _layer(mod)
        for target, _top in targets:
            dst = _layer(target)
            if dst == src:
                continue
            if dst == "cli" or RANK[dst] >= RANK[src]:
                bad.append(f"{mod} imports {target}")
    assert not bad, "imports going up the layer order:\n" + "\n".join(bad)


def test_library_never_imports_the_command_line():
    bad = [f"{mod} imports {t}" for mod, ts in _graph().items() if _layer(mod) != "cli"
           for t, _ in ts if _layer(t) == "cli"]
    assert not bad, bad


@pytest.mark.parametrize("imports", ["module level", "all"])
def test_no_import_cycle(imports):
    """Module-level imports (what runs at import time) form no cycle, package by package too;
    nor do all imports, those inside functions included (two modules that need each other are
    one job split wrong: a deferred import only hides the cycle)."""
    graph = {m: {t for t, top in ts if top or imports == "all"} for m, ts in _graph().items()}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for t in graph.get(m, ()):
            if state.get(t) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_no_type_checking_guards():
    hits = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if "TYPE_CHECKING" in p.read_text()]
    assert not hits, f"TYPE_CHECKING import guards hide import cycles: {hits}"


def test_core_never_imports_the_integrations():
    """Nothing but the integrations themselves (and the CLI, above them) imports them."""
    bad = [f"{mod} imports {t}" for mod, ts in _graph().items() if _layer(mod) not in ("integrations", "cli")
           for t, _ in ts if _layer(t) == "integrations"]
    assert not bad, bad


FRAMEWORKS = ("ultralytics",)   # optional frameworks the integrations bridge to (AGPL-3.0: never in the core)


def test_importing_the_library_never_imports_a_framework():
    """Importing mobilenets and every module of it, the integrations included (they import their
    framework inside functions only), loads no bridged framework (a fresh interpreter)."""
    code = ("import importlib, pkgutil, sys, mobilenets\n"
            "mods = [m.name for m in pkgutil.walk_packages(mobilenets.__path__, 'mobilenets.')\n"
            "        if not m.name.endswith('__main__')]\n"
            "for m in mods: importlib.import_module(m)\n"
            f"loaded = sorted(f for f in {FRAMEWORKS!r} if f in sys.modules)\n"
            "print(len(mods), 'mobilenets.integrations.ultralytics.model' in sys.modules, loaded)\n"
            "sys.exit(1 if loaded else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    n, bridge = out.stdout.split()[:2]
    assert int(n) > 80 and bridge == "True"   # it really walked the package, the integrations included


def test_no_per_task_branches_or_stamped_metadata():
    """A task is one Task object, not ``if task.name == ...`` branches; what a model is lives in
    its ModelInfo record, not in attributes read back with getattr defaults."""
    import re
    pattern = re.compile(r"""task\.name ==|getattr\((model\w*|net|module|m), ["'](in_chans|name)["']|\.backbone_name =|"""
                         r"""\.detector_family|\.segmenter_family""")
    reader = ROOT / "models" / "info.py"   # model_info(): the one place that derives a record from a module
    hits = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in ROOT.rglob("*.py") if p != reader
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_long_modules_say_why():
    """A library module over 400 lines says in its docstring why it is one module ("Why one
    module: ..."); otherwise it is split by job."""
    long = []
    for p in sorted(ROOT.rglob("*.py")):
        text = p.read_text()
        doc = ast.get_docstring(ast.parse(text)) or ""
        if len(text.splitlines()) > 400 and "Why one module:" not in doc:
            long.append(f"{p.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    assert not long, long
