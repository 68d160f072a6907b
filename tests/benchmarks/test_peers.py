"""benchmarks/peers.py and benchmarks/book_recipe.py on a tiny BERT: the book's loss against its formula, the
student's copied layers, and a measured table with every row whose ratios are the rows' own figures."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import book_recipe  # noqa: E402
import peers  # noqa: E402

from lit_compress.errors import UserInputError  # noqa: E402


def test_book_kd_loss_is_the_books_formula() -> None:
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    y = torch.tensor([0, 1])
    alpha, temp = 0.25, 2.0

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    sn, tn = s.numpy().astype(np.float64), t.numpy().astype(np.float64)
    ce = -np.mean(np.log(softmax(sn))[np.arange(2), y.numpy()])
    p, q = softmax(tn / temp), softmax(sn / temp)
    kl = np.sum(p * (np.log(p) - np.log(q))) / 2  # batchmean: summed over classes and rows, divided by rows
    expected = alpha * ce + (1 - alpha) * temp**2 * kl
    assert book_recipe.book_kd_loss(s, t, y, alpha, temp).item() == pytest.approx(expected, rel=1e-6)


def test_student_copies_every_other_teacher_layer() -> None:
    from lit_compress.models.tiny import tiny_bert

    teacher = tiny_bert(num_layers=4)
    layers = book_recipe.every_other_layer(4)
    student = book_recipe.init_student(teacher, layers)
    assert layers == [0, 2] and student.config.num_hidden_layers == 2
    for dst, src in enumerate(layers):
        a, b = student.bert.encoder.layer[dst].state_dict(), teacher.bert.encoder.layer[src].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    with pytest.raises(ValueError, match="student layers"):
        book_recipe.init_student(teacher, [4])


def _run_dir(tmp_path: Path, tiny_model_dir: Path, csv_files: dict[str, str]) -> Path:
    """A main-job run directory: config, teacher and a final artifact recorded under another run_dir name."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "teacher" / "model")
    data = {"dataset": "local", "data_files": csv_files, "max_length": 16, "seed": 0}
    config = {"run_dir": "runs/elsewhere", "teacher": {"data": {"init_args": data},
                                                       "model": {"init_args": {"model": str(tiny_model_dir)}}}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    fp32 = book_recipe.export_onnx(book_recipe.init_student(teacher, [0]), tok, tmp_path / "final-fp32")
    book_recipe.quantize_onnx(fp32, run / "export" / "final")
    (run / "benchmark").mkdir()
    final = {"name": "tiny int8", "path": "runs/elsewhere/export/final"}
    (run / "benchmark" / "stage.json").write_text(json.dumps({"final": final}))
    return run


def test_peers_table_has_every_row_and_the_rows_ratios(tmp_path: Path, tiny_model_dir: Path,
                                                         csv_files: dict[str, str]) -> None:  # fmt: skip
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lit_compress.bench.suite import Variant

    run = _run_dir(tmp_path, tiny_model_dir, csv_files)
    name, path = peers.lit_final(run)
    assert (name, path) == ("lit_compress final: tiny int8", str(run / "export" / "final"))
    dm = peers.run_data(run)
    book = tmp_path / "book"  # the book's artifacts, untrained (the HF Trainer is tested in the next test)
    student = book_recipe.init_student(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir), [0])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    student.save_pretrained(book / "student")
    tok.save_pretrained(book / "student")
    book_recipe.quantize_onnx(book_recipe.export_onnx(student, tok, book / "onnx"), book / "int8")
    variants = [Variant(peers.LIT_TEACHER, str(run / "teacher" / "model")), Variant(peers.BOOK_STUDENT,
                str(book / "student")), Variant(peers.BOOK_FINAL, str(book / "int8")), Variant(name, path)]
    rows = peers.measure(variants, dm, threads=1, runs=5)
    assert [r["name"] for r in rows] == [v.name for v in variants]
    (c,) = peers.compare(rows, name, [peers.BOOK_FINAL])
    ours, peer = rows[3], rows[2]
    assert c["accuracy_pts"] == pytest.approx(100 * (ours["accuracy"] - peer["accuracy"]))
    assert c["latency_ratio"] == pytest.approx(ours["latency_p50_ms"] / peer["latency_p50_ms"])
    assert c["size_ratio"] == pytest.approx(ours["size_mb"] / peer["size_mb"])
    assert c["size_ratio"] == pytest.approx(1.0, abs=0.01)  # the same tiny int8 graph on both sides
    meta = {"settings": {"threads": 1, "runs": 5}, "machine": {"cpu_model": "x", "load_1m": 0.0},
            "cpu_flags": peers.cpu_flags(), "versions": {}}  # fmt: skip
    text = peers.markdown(rows, [c], name, ["a note"], meta)
    out = peers.write_outputs(tmp_path / "out", text, {"rows": rows, "comparisons": [c]})
    table = [line for line in out["markdown"].read_text().splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0][2:] for line in table[1:]] == [v.name for v in variants]
    assert "size_ratio FAIL" in text  # 1.0x is above the 0.1x goal
    assert json.loads(out["json"].read_text())["comparisons"][0]["size_ratio"] == pytest.approx(c["size_ratio"])


def test_compare_checks_each_goal() -> None:
    rows = [{"name": "ours", "accuracy": 0.95, "latency_p50_ms": 1.2, "size_mb": 2.0},
            {"name": "peer", "accuracy": 0.96, "latency_p50_ms": 4.0, "size_mb": 16.0}]
    (c,) = peers.compare(rows, "ours", ["peer"])
    assert c["accuracy_pts"] == pytest.approx(-1.0) and c["latency_ratio"] == pytest.approx(0.3)
    assert c["size_ratio"] == pytest.approx(0.125)
    assert c["pass"] == {"accuracy_pts": False, "latency_ratio": True, "size_ratio": False}


def test_missing_final_artifact_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("run_dir: runs/x\n")
    with pytest.raises(UserInputError, match="benchmark stage"):
        peers.lit_final(tmp_path)


def test_main_trains_the_book_recipe_then_reuses_it(tmp_path: Path, tiny_model_dir: Path,
                                                    csv_files: dict[str, str]) -> None:  # fmt: skip
    pytest.importorskip("accelerate", reason="the HF Trainer needs accelerate (requirements-peers.txt)")
    run = _run_dir(tmp_path, tiny_model_dir, csv_files)
    argv = ["--run_dir", str(run), "--out", str(tmp_path / "peers"), "--runs", "3", "--book_teacher_epochs", "1",
            "--book_student_epochs", "1"]  # fmt: skip
    first = peers.main(argv)
    names = [r["name"] for r in first["rows"]]
    assert names[:5] == [peers.LIT_TEACHER, peers.BOOK_TEACHER, peers.BOOK_STUDENT, peers.BOOK_ONNX, peers.BOOK_FINAL]
    assert names[-1] == "lit_compress final: tiny int8"
    assert not any(s["reused"] for s in first["book"]["stages"].values())
    student = json.loads((tmp_path / "peers" / "book" / "student" / "config.json").read_text())
    assert student["num_hidden_layers"] == 1  # every other layer of the tiny teacher's 2
    second = peers.main(argv)
    assert all(s["reused"] for s in second["book"]["stages"].values())


def test_book_onnx_export_matches_torch_on_a_padded_batch(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lit_compress.export.predictor import Predictor

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["goal match", "the bank profit market shares tax price today"]
    with torch.no_grad():
        expected = model(**tok(texts, padding=True, return_tensors="pt")).logits.numpy()
    predictor = Predictor.from_path(book_recipe.export_onnx(model, tok, tmp_path / "onnx"))
    assert np.abs(predictor.logits(texts) - expected).max() < 1e-4


def test_optimum_row_is_absent_with_the_conflict_named() -> None:
    import importlib.util

    if importlib.util.find_spec("optimum") is not None:
        pytest.skip("optimum is installed here")
    line = peers.optimum_missing()
    assert line is not None and "\n" not in line
    import importlib.metadata

    assert "transformers<4.58" in line and f"transformers=={importlib.metadata.version('transformers')}" in line


def test_a_changed_reused_teacher_retrains_the_student(tmp_path: Path, tiny_model_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    calls: list[str] = []
    monkeypatch.setattr(book_recipe, "distil_student", lambda teacher, *a: calls.append("distil") or teacher)
    splits = {"train": (["goal match"], [1]), "validation": (["bank tax"], [0])}
    kwargs = {"base_model": str(tiny_model_dir), "teacher_dir": str(tiny_model_dir)}
    settings = book_recipe.BookSettings()
    first = book_recipe.run_book_recipe(splits, ["money", "sport", "tech"], tmp_path, settings, **kwargs)
    again = book_recipe.run_book_recipe(splits, ["money", "sport", "tech"], tmp_path, settings, **kwargs)
    (tiny_model_dir / "config.json").write_text((tiny_model_dir / "config.json").read_text() + "\n")
    changed = book_recipe.run_book_recipe(splits, ["money", "sport", "tech"], tmp_path, settings, **kwargs)
    assert calls == ["distil", "distil"] and "teacher" not in first["stages"]
    assert again["stages"]["student"]["reused"] and not changed["stages"]["student"]["reused"]
    assert Path(first["paths"]["ort-dynamic-int8"], "model.onnx").is_file()
