"""Bad input through the real CLI: one `error:` line naming the problem and the fix, exit code 2, no traceback,
and no run directory when the input is refused before any work. No test here trains anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_compress.cli import main

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "configs" / "main.yaml")
CLI = Path(sys.executable).with_name("lit-compress")


def fail(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``lit-compress argv`` in-process; assert exit code 2 and one stderr line; return that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(f"lit-compress {argv[0]}: error: ")
    return lines[0]


def pipeline(run: Path, *options: str) -> list[str]:
    return ["pipeline", "--config", MAIN, "--run_dir", str(run), *options]


def local_data(*files: Path) -> list[str]:
    splits = dict(zip(("train", "validation", "test"), files, strict=False))
    files = "{" + ", ".join(f"{k}: {v}" for k, v in splits.items()) + "}"
    return ["--defaults.data.init_args.dataset", "local", "--defaults.data.init_args.data_files", files]


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    yield path
    assert not path.exists(), "bad input must not leave a run directory behind"


def test_unknown_option_through_the_console_script(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = subprocess.run([str(CLI), *pipeline(run, "--teacher.trainer.max_epochz", "3")], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "lit-compress pipeline: error: unknown option 'teacher.trainer.max_epochz'; did you mean "
        "'teacher.trainer.max_epochs'? "
        "(lit-compress pipeline --help lists the options)"
    ]
    assert not run.exists()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--teacher.trainer.max_epochs", "three"], "teacher.trainer.max_epochs: expected int or null, got 'three'"),
        (["--teacher.lr", "1e-3"], "unknown option 'teacher.lr'; did you mean 'teacher.model.init_args.lr'?"),
        (["--threadz", "2"], "unknown option 'threadz'; did you mean 'threads'?"),
        (["--defaults.data.init_args.text_mode", "body"],
         "teacher.data.init_args.text_mode: expected one of 'title', 'title_lead', 'full', got 'body'"),
        (["--distill.model.init_args.student_layers", "[a]"],
         "distill.model.init_args.student_layers: expected list[int] or null, got ['a']"),
        (["--prune.vocab_min_frequncy", "2"], "unknown option 'prune.vocab_min_frequncy'; did you mean "
                                             "'prune.vocab_min_frequency'?"),
        (["--prune.schedule_end", "1.5"], "prune: prune.schedule_end must be in (0, 1], got 1.5"),
        (["--qat.trainer.callbacks", "[{class_path: lit_compress.quant.QuantizationAwareTraining, init_args: "
          "{filter_fn: '.', log_per_modul: true}}]"],
         "unknown option 'qat.trainer.callbacks.init_args.log_per_modul'; did you mean "
         "'qat.trainer.callbacks.init_args.log_per_module'?"),
        (["--stages", "[teacher]"], "stages must include 'distill'"),
    ],
)
def test_bad_options_name_the_option(capsys, run: Path, options: list[str], expected: str) -> None:
    assert expected in fail(capsys, pipeline(run, *options))


def test_bad_option_in_a_yaml_file(capsys, run: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("teacher:\n  trainer: {max_epochz: 3}\n")
    line = fail(capsys, pipeline(run, "--config", str(recipe)))
    assert "unknown option 'teacher.trainer.max_epochz'; did you mean 'teacher.trainer.max_epochs'?" in line


def test_csv_without_the_label_column(capsys, run: Path, tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("text,category\ngoal match,sport\nchip data,tech\n")
    line = fail(capsys, pipeline(run, *local_data(csv, csv, csv)))
    assert f"{csv} has no label column 'label' (columns: text, category)" in line
    assert "data.label_column" in line


def test_binary_csv(capsys, run: Path, tmp_path: Path) -> None:
    csv = tmp_path / "bin.csv"
    csv.write_bytes(bytes(range(128, 256)) * 20)
    line = fail(capsys, pipeline(run, *local_data(csv)))
    assert f"cannot read {csv} (data_files.train) as CSV: " in line
    assert line.endswith("check the file / format")


def test_missing_data_file(capsys, run: Path, tmp_path: Path) -> None:
    line = fail(capsys, pipeline(run, *local_data(tmp_path / "missing.csv")))
    assert f"data file {tmp_path / 'missing.csv'} (data_files.train) not found" in line


def test_hub_name_while_offline_fails_fast(capsys, run: Path, monkeypatch) -> None:
    import huggingface_hub

    def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    line = fail(capsys, pipeline(run, "--teacher.model.init_args.model", "lit-compress-tests/not-cached"))
    assert line.endswith(
        "cannot load 'lit-compress-tests/not-cached': not in the local cache and the hub is unreachable (offline); "
        "pass a local directory, a .ckpt, or embedded:all-MiniLM-L6-v2"
    )


def test_hub_name_with_hf_hub_offline(capsys, run: Path, monkeypatch) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    line = fail(capsys, pipeline(run, "--teacher.model.init_args.model", "lit-compress-tests/not-cached"))
    assert "not in the local cache and the hub is unreachable (HF_HUB_OFFLINE is set)" in line


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x80\x04not a checkpoint at all" * 50, "corrupt, or holds objects weights_only=True refuses"),
        (b"", "the file is empty or truncated"),
    ],
)
def test_corrupt_checkpoint_as_teacher(capsys, run: Path, tmp_path: Path, content: bytes, expected: str) -> None:
    ckpt = tmp_path / "teacher.ckpt"
    ckpt.write_bytes(content)
    line = fail(capsys, pipeline(run, "--teacher.model.init_args.model", str(ckpt)))
    assert f"cannot load checkpoint {ckpt}: {expected}" in line


def test_checkpoint_of_something_else(capsys, run: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1e-3}}, ckpt)
    assert "is not a ClassifierModule checkpoint" in fail(capsys, pipeline(run, "--teacher.model.init_args.model", str(ckpt)))


def test_missing_model_path(capsys, run: Path, tmp_path: Path) -> None:
    line = fail(capsys, pipeline(run, "--teacher.model.init_args.model", str(tmp_path / "no" / "model")))
    assert f"model '{tmp_path / 'no' / 'model'}' not found" in line


def test_a_family_without_a_layout_is_refused_before_training(capsys, run: Path, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model_dir = tmp_path / "gpt2"
    GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=64, pad_token_id=0,
                                             id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1})).save_pretrained(model_dir)  # fmt: skip
    capsys.readouterr()  # save_pretrained's progress bar
    line = fail(capsys, pipeline(run, "--teacher.model.init_args.model", str(model_dir)))
    assert f"{model_dir} is a 'gpt2' model, which has no model layout, and the run needs one for structured pruning" in line
    assert "supported families: albert, bert, camembert, deberta-v2, distilbert, electra, modernbert, roberta" in line


def test_an_existing_run_directory_is_kept(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "teacher").mkdir(parents=True)
    fail(capsys, pipeline(run, "--teacher.model.init_args.model", str(tmp_path / "nope")))
    assert (run / "teacher").is_dir()


FIT = ["fit", "--model=lit_compress.distill.ClassifierModule", "--data=lit_compress.data.TextClassificationDataModule",
       "--trainer.max_steps=1", "--trainer.accelerator=cpu"]


def test_fit_unknown_and_mistyped_options(capsys, tmp_path: Path) -> None:
    root = f"--trainer.default_root_dir={tmp_path / 'fit'}"
    line = fail(capsys, [*FIT, root, "--trainer.max_stepz=3"])
    assert "unknown option 'trainer.max_stepz'; did you mean 'trainer.max_steps'?" in line
    assert "model.lr: expected float, got 'fast'" in fail(capsys, [*FIT, root, "--model.lr=fast"])
    assert "unknown option 'model.lrr'; did you mean 'model.lr'?" in fail(capsys, [*FIT, root, "--model.lrr=1"])
    assert not (tmp_path / "fit").exists()


@pytest.fixture()
def no_dataset_bars():
    """datasets' "Generating train split" bars go to stderr while fit loads the data before the model."""
    import datasets

    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def test_fit_bad_data_and_model(capsys, tmp_path: Path, csv_files: dict[str, str], no_dataset_bars) -> None:
    root = f"--trainer.default_root_dir={tmp_path / 'fit'}"
    csv = tmp_path / "x.csv"
    csv.write_text("text,category\ngoal match,sport\n")
    files = f"--data.data_files={{train: {csv}}}"
    assert "has no label column 'label'" in fail(capsys, [*FIT, root, "--data.dataset=local", files])
    ckpt = tmp_path / "bad.ckpt"
    ckpt.write_bytes(bytes(range(128, 256)) * 8)  # binary, as a damaged .ckpt is (a text file jsonargparse would read)
    good = "--data.data_files={" + ", ".join(f"{k}: {v}" for k, v in csv_files.items()) + "}"
    line = fail(capsys, [*FIT, root, "--data.dataset=local", good, f"--model.model={ckpt}"])
    assert f"cannot load checkpoint {ckpt}" in line
    assert not (tmp_path / "fit").exists()


def test_fit_distillation_with_a_corrupt_teacher_checkpoint(capsys, tmp_path: Path, csv_files: dict[str, str],
                                                            no_dataset_bars) -> None:  # fmt: skip
    ckpt = tmp_path / "teacher.ckpt"
    ckpt.write_bytes(bytes(range(128, 256)) * 8)
    good = "--data.data_files={" + ", ".join(f"{k}: {v}" for k, v in csv_files.items()) + "}"
    argv = ["fit", "--model=lit_compress.distill.DistillationModule", f"--model.teacher={ckpt}",
            "--data=lit_compress.data.TextClassificationDataModule", "--data.dataset=local", good,
            "--trainer.max_steps=1", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path / 'fit'}"]
    assert f"cannot load checkpoint {ckpt}" in fail(capsys, argv)
    assert not (tmp_path / "fit").exists()


def test_unknown_int8_target_is_one_line(capsys, tmp_path: Path) -> None:
    run = tmp_path / "run"
    line = fail(capsys, pipeline(run, "--export.target", "avx3"))
    assert "export.target='avx3' is not an int8 target" in line and "'avx2'" in line
    assert not run.exists()
