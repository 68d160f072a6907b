"""Every notebook in notebooks/ runs top to bottom on the small budget, so the notebooks cannot rot.

Each notebook reads ``LIT_COMPRESS_NOTEBOOK_BUDGET`` (``small`` here: a few optimizer steps, a few timed calls)
and writes under ``LIT_COMPRESS_NOTEBOOK_RUN_DIR``; the kernel runs in a temporary directory. After a run, the
files the notebook wrote are checked against what its cells claim.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook tests need the `notebooks` extra")
nbclient = pytest.importorskip("nbclient", reason="the notebook tests need the `notebooks` extra")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def execute(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``path`` in a fresh ``python3`` kernel on the small budget; return the executed notebook."""
    monkeypatch.setenv("LIT_COMPRESS_NOTEBOOK_BUDGET", "small")
    monkeypatch.setenv("LIT_COMPRESS_NOTEBOOK_RUN_DIR", str(tmp_path / "runs"))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def stdout(nb) -> str:
    return "".join(o.get("text", "") for c in code_cells(nb) for o in c.outputs if o.output_type == "stream")


# -- checks of what each notebook wrote ---------------------------------------------------------------------------
def check_chapter_flow(run_dir: Path, nb) -> None:
    out = run_dir / "01_chapter_flow"
    report = json.loads((out / "benchmark" / "benchmark.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == ["MiniLM-L6 teacher", "3-layer student (labels only)", "distillation",
                          "distillation + torch int8", "distillation + ORT", "distillation + ORT int8",
                          "pruned + trimmed + ORT int8"]  # fmt: skip
    assert (out / "benchmark" / "benchmark.png").stat().st_size > 10_000
    assert rows["distillation"]["parameters"] < rows["MiniLM-L6 teacher"]["parameters"]
    # int8 weights take about a quarter of the float32 bytes (ORT also quantizes the embeddings)
    assert rows["distillation + ORT int8"]["size_bytes"] < rows["distillation + ORT"]["size_bytes"] / 3
    final = rows["pruned + trimmed + ORT int8"]
    assert final["parameters"] < rows["distillation"]["parameters"] / 3  # vocabulary trimming + heads/FFN
    assert final["size_ratio"] > 10  # against the teacher, the first row
    summary = json.loads((out / "tune" / "best_params.json").read_text())
    assert set(summary["best"]["params"]) == {"alpha", "temperature"}
    assert "after:  ArchitectureSpec(num_heads=(6, 6, 6), intermediate_sizes=(384, 384, 384)" in stdout(nb)


def check_pruning_tutorial(run_dir: Path, nb) -> None:
    text = stdout(nb)
    ratio = float(re.search(r"gzip ratio: ([0-9.]+)x smaller", text).group(1))
    assert ratio > 2.5  # the tutorial's "3x smaller"
    assert "global        20.0% zeros" in text  # global_l1_unstructured(amount=0.2)
    assert "after a second amount=0.2: 36.0% zeros" in text and "global_masks(scores, 0.4): 40.0% zeros" in text
    with next((run_dir / "02_pruning_tutorial" / "pruning_logs").rglob("metrics.csv")).open() as f:
        updates = [row for row in csv.DictReader(f) if row.get("sparsity/target")]
    assert float(updates[0]["sparsity/target"]) == pytest.approx(0.5)  # PolynomialDecay 50% -> 80%
    assert float(updates[-1]["sparsity/target"]) == pytest.approx(0.8)
    assert float(updates[-1]["sparsity/global"]) == pytest.approx(0.8, abs=1e-3)


def check_subclassing(run_dir: Path, nb) -> None:
    out = run_dir / "03_subclassing"
    assert (out / "research" / "my_research.py").is_file()
    header = (out / "fit" / "logs" / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "train/logit_mse" in header  # the research loss term was trained and logged
    match = re.search(r"step (\d+): schedule says ([0-9.]+), the student's encoder weights are ([0-9.]+) zeros",
                      stdout(nb))
    assert match, "the notebook compared the checkpoint's sparsity with the schedule"
    step, expected, reached = int(match.group(1)), float(match.group(2)), float(match.group(3))
    assert step == 4 and expected == pytest.approx(0.5) and reached == pytest.approx(expected, abs=1e-3)


def check_vision_cnn(run_dir: Path, nb) -> None:
    out = run_dir / "04_vision_cnn"
    report = json.loads((out / "benchmark" / "benchmark.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows)[:2] == ["teacher torch fp32", "student torch fp32"]
    assert "pruned QAT static int8 (Q/DQ)" in rows and (out / "benchmark" / "benchmark.png").stat().st_size > 10_000
    assert rows["pruned PTQ ORT static int8"]["parameters"] < rows["student torch fp32"]["parameters"] / 2
    static = json.loads((out / "export" / "pruned" / "ort-static-int8" / "manifest.json").read_text())
    assert static["kernels"]["int8_compute"].get("QLinearConv", 0) >= 10 and static["kernels"]["float_conv"] == 0
    text = stdout(nb)
    assert re.search(r"student parameters: [0-9,]+  pruned: [0-9,]+ +\(([0-9.]+)x fewer\)", text)
    assert text.count("predicted ") == 8 and "final artifact:" in text


CHECKS: dict[str, Callable[[Path, object], None]] = {
    "01_chapter_flow": check_chapter_flow,
    "02_pruning_tutorial": check_pruning_tutorial,
    "03_subclassing": check_subclassing,
    "04_vision_cnn": check_vision_cnn,
}


# -- tests --------------------------------------------------------------------------------------------------------
def test_every_notebook_has_checks() -> None:
    assert NOTEBOOKS, "notebooks/ holds the walkthroughs"
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(CHECKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_and_parametrized(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    cells = code_cells(nb)
    assert all(not c.outputs and c.execution_count is None for c in cells), "commit notebooks with outputs cleared"
    first = cells[0]
    assert "parameters" in first.metadata.get("tags", []) and "LIT_COMPRESS_NOTEBOOK_BUDGET" in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defines_no_library_code(path: Path) -> None:
    """Notebooks use the library; classes belong in lit_compress (or, in 03, in the user's own file)."""
    nb = nbformat.read(path, as_version=4)
    for cell in code_cells(nb):
        if cell.source.startswith("%%writefile"):
            continue
        tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.startswith(("%", "!"))))
        classes = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        assert not classes, f"{path.name} defines {classes}; use (or add to) the library instead"


#: Executed only with ``-m slow`` (``make test-all``): the vision notebook's CNN run takes ~60 s of the default
#: suite's 20 minutes, and its pipeline is the one ``tests/pipeline/test_vision_pipeline.py`` runs on images.
SLOW_NOTEBOOKS = {"04_vision_cnn"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_NOTEBOOKS else p
                                  for p in NOTEBOOKS], ids=lambda p: p.stem)  # fmt: skip
def test_notebook_runs_on_the_small_budget(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute(path, tmp_path, monkeypatch)
    errors = [o for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]
    assert not errors
    CHECKS[path.stem](tmp_path / "runs", nb)
