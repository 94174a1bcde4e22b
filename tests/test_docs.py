"""Every Python and shell block of README.md and docs/*.md runs, as written, so a page cannot
drift from the code.

A block runs on its own, in a fresh folder (Python: a fresh namespace; shell: ``bash -e -o
pipefail`` with this interpreter's ``bin/`` first on ``PATH``). An HTML comment on the line
before a block says what it needs, and nothing else changes how it runs::

    <!-- docs: needs=digits-run,scene-images slow -->

- ``needs=A,B``: files the block starts from, made once per test session by :data:`FIXTURES`
  and copied into the block's folder (the page says where they come from, e.g. ``runs/digits``
  is what ``mobilenets train --out runs/digits`` writes);
- ``slow``: runs only with ``-m slow`` (``make test-all``);
- ``repo``: runs in the repository root (install and ``make`` commands);
- ``skip=REASON``: not run, with the reason (only for the test command itself).

Blocks in other languages (``text``, ``yaml``, output listings) are not run. A page is also
checked for links to files that do not exist and for references to files outside the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs:(?P<body>.*?)-->\s*$")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    needs: tuple[str, ...] = ()
    slow: bool = False
    repo: bool = False
    skip: str = ""

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a page with the directive on the line before each."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or not m["lang"]:
            i += 1
            continue
        indent, start = len(m["indent"]), i
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^ {{{indent}}}```\s*$", lines[i]):
            body.append(lines[i][indent:])
            i += 1
        directive = _DIRECTIVE.match(lines[start - 1]) if start else None
        b = Block(page, start + 1, m["lang"], "\n".join(body) + "\n")
        if directive:
            for word in directive["body"].split():
                key, _, value = word.partition("=")
                if key == "needs":
                    b.needs = tuple(v for v in value.split(",") if v)
                elif key in ("slow", "repo"):
                    setattr(b, key, True)
                elif key == "skip":
                    b.skip = directive["body"].split("skip=", 1)[1].strip()
                    break
                else:
                    raise ValueError(f"{page.name}:{start}: unknown docs directive {word!r}")
        blocks.append(b)
        i += 1
    return blocks


ALL_BLOCKS = [b for page in PAGES for b in parse_blocks(page)]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.lang in RUN_LANGS]


# --- the files blocks start from (made once per session) ------------------------------------------
def _run(cmd: list[str], cwd: Path) -> None:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800, env=_env())
    assert res.returncode == 0, f"fixture command {' '.join(cmd)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("YOLO_OFFLINE", "1")
    env["MPLBACKEND"] = "Agg"
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mobilenets", *args]


def _digits_run(d: Path) -> None:
    # what `mobilenets train --out runs/digits` writes, trained briefly: 1 epoch at the recipe's size
    _run(_cli("train", "--out", "runs/digits", "--epochs", "1", "--no-progress"), d)


def _digits_run_075(d: Path) -> None:
    _run(_cli("train", "--out", "runs/digits-075", "--set", "model_kwargs={\"width_mult\": 0.75}", "--epochs", "1",
              "--no-progress"), d)


def _det_run(d: Path) -> None:
    _run(_cli("train", "--task", "detect", "--out", "runs/det", "--epochs", "1", "--no-progress",
              "--set", "scene_images=32", "--set", "scene_val_images=8", "--batch-size", "8"), d)


def _seg_run(d: Path) -> None:
    _run(_cli("train", "--task", "segment", "--out", "runs/seg", "--epochs", "1", "--no-progress",
              "--set", "scene_images=16", "--set", "scene_val_images=8", "--batch-size", "8"), d)


def _scenes(fmt: str):
    def make(d: Path) -> None:
        _run(_cli("data", "digit-scenes", "--format", fmt, "--out", f"data/scenes-{fmt}", "--train-images", "24",
                  "--val-images", "8", "--quiet"), d)
    return make


def _scene_images(d: Path) -> None:
    """``street.jpg`` and ``scene.png`` (digit-scenes images) and an image folder of digits."""
    from PIL import Image
    from mobilenets.data import load_digits_tensors
    from mobilenets.data import DigitScenes

    ds = DigitScenes("val", num_images=2)
    for i, name in enumerate(("street.jpg", "scene.png")):
        img = (ds[i][0] * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(img).save(d / name)
    x, y = load_digits_tensors(64)
    for i in range(60):
        folder = d / "data" / "digit-folder" / str(int(y[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i].permute(1, 2, 0).numpy()).save(folder / f"{i}.png")


def _my_space(d: Path) -> None:
    """``my_space.json``: written by the block of docs/search.md that defines the page's own space
    (run as the page shows it, so the fixture cannot drift from the page)."""
    block = next(b for b in parse_blocks(ROOT / "docs" / "search.md")
                 if b.lang == "python" and "my_space.json" in b.code)
    _run([sys.executable, "-c", block.code], d)


FIXTURES = {
    "my-space": _my_space,              # my_space.json: the search space defined in docs/search.md
    "digits-run": _digits_run,          # runs/digits/{best,last}.pt: the main job's checkpoint
    "digits-run-075": _digits_run_075,  # runs/digits-075: the same classifier at width 0.75
    "det-run": _det_run,                # runs/det: an SSDLite320 digit-scenes run
    "seg-run": _seg_run,                # runs/seg: an LR-ASPP digit-scenes run
    "scenes-coco": _scenes("coco"),     # data/scenes-coco
    "scenes-yolo": _scenes("yolo"),     # data/scenes-yolo
    "scenes-voc": _scenes("voc"),       # data/scenes-voc
    "scene-images": _scene_images,      # street.jpg, scene.png, data/digit-folder/<class>/*.png
}


@pytest.fixture(scope="session")
def made(tmp_path_factory):
    """``made(name) -> folder`` holding that fixture's files (made on first use)."""
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in FIXTURES:
            raise KeyError(f"unknown docs fixture {name!r}; known: {sorted(FIXTURES)}")
        if name not in cache:
            d = tmp_path_factory.mktemp(f"docs-{name}")
            FIXTURES[name](d)
            cache[name] = d
        return cache[name]
    return get


def _params(blocks):
    return [pytest.param(b, id=b.id, marks=[pytest.mark.slow] if b.slow else []) for b in blocks]


@pytest.mark.parametrize("block", _params(RUN_BLOCKS))
def test_block_runs(block: Block, tmp_path, made, monkeypatch):
    if block.skip:
        pytest.skip(block.skip)
    cwd = ROOT if block.repo else tmp_path
    for name in block.needs:
        shutil.copytree(made(name), cwd, dirs_exist_ok=True)
    if RUN_LANGS[block.lang] == "bash":
        res = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=cwd, capture_output=True,
                             text=True, env=_env(), timeout=3600)
        assert res.returncode == 0, (f"{block.id} failed (exit {res.returncode}):\n{block.code}\n--- stdout\n"
                                     f"{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}")
        return
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    import matplotlib
    matplotlib.use("Agg")
    code = compile(block.code, f"{block.page.name}:{block.line}", "exec")
    exec(code, {"__name__": "__main__"})


def test_every_block_is_seen_and_directives_are_known():
    """The parser finds the blocks (a broken fence would hide the rest of a page) and every
    ``needs=`` names a fixture; skipped blocks say why."""
    assert len(RUN_BLOCKS) >= 20
    for b in RUN_BLOCKS:
        assert set(b.needs) <= set(FIXTURES), f"{b.id}: unknown fixture in {b.needs}"
        assert not b.skip or len(b.skip) > 10, f"{b.id}: a skipped block must say why"
    for page in PAGES:
        fences = [ln for ln in page.read_text().splitlines() if ln.strip().startswith("```")]
        assert len(fences) % 2 == 0, f"{page.name}: unbalanced code fences"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_links_point_inside_the_repository(page):
    text = page.read_text()
    assert "shared/" not in text, f"{page.name} cites a file outside the repository (cite the paper instead)"
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        assert (page.parent / target).exists(), f"{page.name}: link to a missing file {target}"


def test_the_site_builds_strictly(tmp_path):
    """``mkdocs build --strict`` (material theme; mkdocs.yml): every page is in the navigation,
    every link between pages resolves, no markup warning."""
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert (tmp_path / "site" / "models" / "index.html").exists()
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f": {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"
