"""A missing optional package is a user error: one line naming the feature, the package and the
extra to install (``pip install 'mobilenets[<extra>]'``), exit code 2, nothing written; never a
traceback reported as a bug.

Each case runs the command in a fresh interpreter with the package hidden (``sys.modules[name] =
None`` makes every ``import name`` fail as if it were not installed), so no module or cache an
earlier test imported can stand in for it.
"""

import subprocess
import sys
import textwrap

import pytest

from mobilenets.extras import EXTRAS, MissingDependencyError, install_hint, require

# (hidden package, the extra that brings it, the command)
CLI_CASES = [
    ("onnx", "onnx", ["export", "mobilenetv2_035", "--out", "{tmp}/m.onnx"]),
    ("onnxruntime", "onnx", ["export", "mobilenetv2_035", "--out", "{tmp}/m.onnx"]),
    ("onnxruntime", "onnx", ["export", "mobilenetv2_035", "--out", "{tmp}/m.onnx", "--int8", "--calib", "fake"]),
    ("executorch", "mobile", ["export", "mobilenetv2_035", "--format", "executorch", "--out", "{tmp}/m.pte"]),
    ("litert_torch", "mobile", ["export", "mobilenetv2_035", "--format", "tflite", "--out", "{tmp}/m.tflite"]),
    ("ai_edge_litert", "mobile", ["export", "mobilenetv2_035", "--format", "tflite", "--out", "{tmp}/m.tflite"]),
    ("huggingface_hub", "hub", ["export", "mobilenetv2_035", "--weights", "hf-hub:org/name", "--out", "{tmp}/m.onnx"]),
    ("sklearn", "train", ["train", "--epochs", "1", "--out", "{tmp}/run", "--no-progress"]),
    ("torchmetrics", "detect", ["train", "--task", "detect", "--model", "ssdlite320_mobilenetv2_035", "--epochs", "1",
                                "--out", "{tmp}/run", "--no-progress"]),
    ("faster_coco_eval", "detect", ["train", "--task", "detect", "--model", "ssdlite320_mobilenetv2_035",
                                    "--epochs", "1", "--out", "{tmp}/run", "--no-progress"]),
    ("torchmetrics", "detect", ["train", "--task", "segment", "--model", "lraspp_mobilenetv2_035", "--epochs", "1",
                                "--out", "{tmp}/run", "--no-progress"]),
    ("matplotlib", "plot", ["profile", "mobilenetv2_035", "--plot", "{tmp}/p.png"]),
]

_RUN = textwrap.dedent("""
    import sys
    for name in {hidden!r}:
        sys.modules[name] = None
    from mobilenets.cli import main
    sys.exit(main({argv!r}))
""")


def _run_hidden(hidden: list[str], argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUN.format(hidden=hidden, argv=argv)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("package,extra,argv", CLI_CASES,
                         ids=[f"{c[0]}-{c[2][0]}-{c[2][-1].rsplit('/', 1)[-1]}" for c in CLI_CASES])
def test_missing_package_is_one_line_naming_the_extra(tmp_path, package, extra, argv):
    argv = [a.format(tmp=tmp_path) for a in argv]
    res = _run_hidden([package], argv)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("mobilenets ")]
    assert len(lines) == 1, res.stderr
    assert f"pip install 'mobilenets[{extra}]'" in lines[0]
    assert EXTRAS[package][0] in lines[0]  # the package's own name
    assert not any(tmp_path.iterdir()), "nothing may be written when a package is missing"


def test_missing_ultralytics_names_the_yolo_extra():
    code = textwrap.dedent("""
        import sys
        sys.modules["ultralytics"] = None
        from mobilenets.integrations.ultralytics import yolo
        try:
            yolo("n", backbone="mobilenetv2_035", nc=10)
        except ImportError as e:
            print(e)
            sys.exit(0)
        sys.exit("no ImportError")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "pip install 'mobilenets[yolo]'" in res.stdout
    assert len(res.stdout.strip().splitlines()) == 1


def test_require_in_process(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError, match=r"ONNX export needs onnx, which is not installed: "
                                                     r"pip install 'mobilenets\[onnx\]'$"):
        require("onnx", "ONNX export")
    assert isinstance(MissingDependencyError("x"), ImportError)  # the CLI's user-error class
    assert require("json", "anything").dumps  # an installed module comes back
    assert install_hint("sklearn") == "pip install 'mobilenets[train]'"


def test_require_does_not_hide_a_broken_install(tmp_path, monkeypatch):
    """A package that is installed but fails on an import of its own shows that cause."""
    pkg = tmp_path / "brokenpkg_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import a_module_that_does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist_anywhere"):
        require("brokenpkg_for_test", "a feature")
