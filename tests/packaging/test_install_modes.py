"""Every ordinary way of installing modelroute gives all of it, importable from any directory.

The layout (docs/architecture.md, "Package layout"): ``modelroute`` is a
namespace package; ``src/``, ``proxy/src/`` and ``operator/src/`` each
contribute regular sub-packages to it, mapped by ``[tool.setuptools]`` in
pyproject.toml.  What could go wrong, and which test catches it:

* a new sub-package missing from the ``packages`` list: editable installs
  still find it, only the wheel (and so the image) lacks it –
  :func:`test_the_package_list_names_every_package` says which one;
* a mode whose import hook or link tree misses a tree (plain editable once
  lost ``modelroute.operator``) – one test per mode imports every module;
* a bare ``operator`` shadowing the standard library when Python starts in
  the repository root – every probe checks ``operator`` is the stdlib's.

Each mode is built once, into a throw-away venv whose dependencies come from
this venv's site-packages through a plain ``.pth`` line (so this venv's own
editable hook is not loaded there), with ``--no-deps --no-build-isolation``:
nothing is downloaded and a fresh venv costs seconds, not minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TREES = (ROOT / "src", ROOT / "proxy" / "src", ROOT / "operator" / "src")

# Imports every module of every tree, runs the CLI's parser, and reports where things came from.
PROBE = r"""
import importlib, json, operator, pathlib, pkgutil, sys
import modelroute.proxy, modelroute.operator
roots = ("modelroute.cli", "modelroute.devtools", "modelroute.examples", "modelroute.resources",
         "modelroute.proxy", "modelroute.operator")
names = sorted(roots) + sorted(
    m.name for p in roots
    for m in pkgutil.walk_packages(importlib.import_module(p).__path__, p + ".")
)
for name in names:
    importlib.import_module(name)
from modelroute.cli import build_parser
build_parser()
from modelroute.devtools.demo.topology import load_template
load_template()  # package data (examples/demo.yaml) ships too
import modelroute.proxy.upstream.providers as up
print(json.dumps({
    "operator": operator.__file__,
    "modelroute.operator": modelroute.operator.__file__,
    "modules": names,
    "modelroute": list(__import__("modelroute").__path__),
    "user_agent": up.USER_AGENT,
}))
"""


def source_modules() -> set[str]:
    """Every module the three trees hold, by import name (but ``python -m``'s entry point)."""
    found = set()
    for tree in TREES:
        for path in (tree / "modelroute").rglob("*.py"):
            parts = path.relative_to(tree).with_suffix("").parts
            found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found - {"modelroute.__main__"}


def probe(python: Path, cwd: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run(
        [str(python), "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


def check_everywhere(python: Path, expect_under: Path | None = None) -> None:
    """The probe passes from the repository root and from an unrelated directory."""
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    want = source_modules()
    for cwd in (ROOT, Path("/")):
        result = probe(python, cwd)
        assert Path(str(result["operator"])).resolve().parent == stdlib, result["operator"]
        missing = want - set(result["modules"])  # type: ignore[arg-type]
        assert not missing, f"not importable from {cwd}: {sorted(missing)}"
        assert result["user_agent"] == "modelroute/" + project()["version"]
        if expect_under is not None:
            assert Path(str(result["modelroute.operator"])).is_relative_to(expect_under)


def project() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([str(python), "-c", code], text=True).strip())


def throwaway_venv(where: Path) -> Path:
    """A venv that borrows this one's installed dependencies, without its modelroute hook."""
    venv.EnvBuilder(with_pip=False).create(where)
    site = site_packages(where / "bin" / "python")
    (site / "_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return where / "bin" / "python"


def pip(python: Path, *args: str, cwd: Path = ROOT) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-build-isolation", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def copy_sources(dest: Path, paths: list[str]) -> Path:
    for rel in paths:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def dockerfile_copies() -> list[str]:
    """The sources the image's build stage copies before it runs ``pip install .``."""
    text = (ROOT / "Dockerfile").read_text()
    build_stage = re.split(r"^FROM ", text, flags=re.M)[1]
    paths: list[str] = []
    for line in build_stage.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            paths += [p.rstrip("/") for p in line.split()[1:-1]]
    assert re.search(r"pip install \.(\s|$)", build_stage), (
        "the image installs with `pip install .`"
    )
    return paths


# ---------------------------------------------------------------------------------------


def test_the_package_list_names_every_package() -> None:
    """pyproject's explicit package list (what a wheel ships) holds every package folder."""
    setuptools_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    mapped = setuptools_cfg["package-dir"]
    on_disk = set()
    for tree in TREES:
        for init in (tree / "modelroute").rglob("__init__.py"):
            on_disk.add(".".join(init.parent.relative_to(tree).parts))
    assert on_disk - listed == set(), (
        f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    )
    for name in listed:
        # each listed package resolves to a folder through the nearest mapped ancestor
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            if ".".join(parts[:cut]) in mapped:
                base = ROOT / mapped[".".join(parts[:cut])]
                assert base.joinpath(*parts[cut:]).is_dir(), name
                break
        else:
            pytest.fail(f"{name} has no package-dir mapping")
    # nothing at the repository root can be imported as a bare `operator` or `proxy`
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "proxy" / "__init__.py").exists()


def test_this_venv_which_make_install_built_works_from_any_directory() -> None:
    """`make install` (a plain editable install) serves every module, from / and from the repo."""
    check_everywhere(Path(sys.executable), expect_under=ROOT / "operator" / "src")


@pytest.mark.slow
def test_a_plain_editable_install_works_from_any_directory(tmp_path: Path) -> None:
    """`pip install -e .`: setuptools' default (lenient) import hook finds all three trees."""
    python = throwaway_venv(tmp_path / "venv")
    pip(python, "-e", str(ROOT))
    check_everywhere(python, expect_under=ROOT / "operator" / "src")


@pytest.mark.slow
def test_a_strict_editable_install_works_from_any_directory(tmp_path: Path) -> None:
    """`pip install -e . --config-settings editable_mode=strict` links every module.

    Built from a copy, as strict mode writes its link tree into the project's ``build/``.
    """
    copy = copy_sources(
        tmp_path / "src", ["pyproject.toml", "README.md", "src", "proxy", "operator"]
    )
    python = throwaway_venv(tmp_path / "venv")
    pip(python, "-e", str(copy), "--config-settings", "editable_mode=strict", cwd=copy)
    check_everywhere(python, expect_under=copy / "build")


@pytest.mark.slow
def test_the_images_wheel_install_works_from_any_directory(tmp_path: Path) -> None:
    """`pip install .` from exactly what the Dockerfile copies: the image gets every module."""
    context = copy_sources(tmp_path / "context", dockerfile_copies())
    python = throwaway_venv(tmp_path / "venv")
    pip(python, str(context), cwd=context)
    site = site_packages(python)
    check_everywhere(python, expect_under=site)
    assert (site / "modelroute" / "proxy" / "py.typed").exists()
