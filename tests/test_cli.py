"""Every shipped YAML parses, and a tiny `fit` runs through the CLI on CPU."""

from pathlib import Path

import pytest
import yaml

from lit_compress.cli import main

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").rglob("*.yaml"))


def test_configs_exist() -> None:
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_config_parses(config: Path, capsys) -> None:
    first = config.read_text().splitlines()[0]
    assert first.startswith("#"), "every recipe opens with a comment"
    command = next(line for line in config.read_text().splitlines() if "lit-compress" in line)
    verb = command.split("lit-compress", 1)[1].split()[0]
    with pytest.raises(SystemExit) as err:
        main([verb, "--config", str(config), "--print_config"])
    assert err.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(printed, dict)


def test_tiny_fit_through_the_cli(tmp_path, csv_files, tiny_model_dir) -> None:
    args = [
        "fit",
        "--model=lit_compress.distill.DistillationModule",
        f"--model.teacher={tiny_model_dir}",
        "--model.student_layers=[1]",
        "--data=lit_compress.data.TextClassificationDataModule",
        "--data.dataset=local",
        f"--data.data_files={{train: {csv_files['train']}, validation: {csv_files['validation']}, test: {csv_files['test']}}}",
        f"--data.tokenizer={tiny_model_dir}",
        "--data.batch_size=8",
        "--trainer.max_steps=3",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    assert main(args) == 0
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert ckpts, "fit wrote a checkpoint"
    assert main(["test", *args[1:-4], "--trainer.accelerator=cpu", f"--ckpt_path={ckpts[0]}",
                 f"--trainer.default_root_dir={tmp_path}"]) == 0


def test_unknown_verb_exits_nonzero(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        main(["frobnicate"])
    assert err.value.code == 2
    assert "unknown verb" in capsys.readouterr().err
