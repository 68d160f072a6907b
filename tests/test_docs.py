"""The API reference builds from the docstrings without warnings, and covers every public name."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("mkdocs", reason="the docs test needs mkdocs and mkdocstrings[python] (dev extra)")
pytest.importorskip("mkdocstrings_handlers.python", reason="the docs test needs mkdocstrings[python] (dev extra)")

import lit_compress  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Known docstring problems, as ``file:line`` of the griffe warning. Each entry must still occur (so a fixed
#: docstring removes its entry); any other warning fails the build check.
KNOWN_WARNINGS: set[str] = set()
TOP_LEVEL = sorted(m.name for m in pkgutil.iter_modules(lit_compress.__path__) if m.name != "__main__")


def nav_pages(nav: list) -> list[str]:
    pages: list[str] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def public_names(module_name: str) -> list[str]:
    """``__all__``, or else the non-module, non-underscore names a package imports; constants (``UPPER_CASE``,
    which have no docstrings to render) excepted."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and not hasattr(v, "__path__")
                 and getattr(v, "__module__", "").startswith(module_name + ".")]  # fmt: skip
    return [n for n in names if not n.startswith("__") and not n.isupper()]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--config-file", str(ROOT / "mkdocs.yml"),
                             "--site-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    unknown = [w for w in warnings if not any(k in w for k in KNOWN_WARNINGS)]
    assert not unknown, "docs build warnings:\n" + "\n".join(unknown)
    stale = [k for k in KNOWN_WARNINGS if not any(k in w for w in warnings)]
    assert not stale, f"fixed docstring(s) {stale}: remove them from KNOWN_WARNINGS"
    return out


def test_every_module_has_an_api_page_in_the_nav() -> None:
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    for name in TOP_LEVEL:
        assert f"api/{name}.md" in nav and (ROOT / "docs" / "api" / f"{name}.md").is_file(), name


def test_build_documents_the_api_from_docstrings(site: Path) -> None:
    page = (site / "api" / "distill" / "index.html").read_text()
    assert 'id="lit_compress.distill.DistillationModule"' in page
    assert 'id="lit_compress.distill.DistillationModule.compute_loss"' in page
    assert "Distilling the Knowledge in a Neural Network" in page  # KDLoss's docstring cites Hinton et al.
    assert (site / "extending" / "index.html").is_file() and (site / "notebooks" / "index.html").is_file()


@pytest.mark.parametrize("package", [n for n in TOP_LEVEL if (ROOT / "lit_compress" / n).is_dir()])
def test_every_public_name_is_documented(site: Path, package: str) -> None:
    page = (site / "api" / package / "index.html").read_text()
    documented = set(re.findall(r'id="(lit_compress[\w.]*)"', page))
    missing = [n for n in public_names(f"lit_compress.{package}")
               if not any(d == f"lit_compress.{package}.{n}" or d.endswith(f".{n}") for d in documented)]  # fmt: skip
    assert not missing, f"lit_compress.{package} exports {missing} but docs/api/{package}.md does not show them"
