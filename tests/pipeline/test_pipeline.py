import json

import pytest

from lit_compress.cli import main
from lit_compress.pipeline import DataConfig, DistillConfig, TeacherConfig, TrainConfig, run_pipeline


def test_main_job_on_a_reduced_budget(tmp_path, csv_files, tiny_model_dir) -> None:
    data = DataConfig(dataset="local", data_files=csv_files, batch_size=8, max_length=16)
    teacher = TeacherConfig(model=str(tiny_model_dir), train=TrainConfig(epochs=1, max_steps=3, lr=1e-3))
    distill = DistillConfig(layers=[1], train=TrainConfig(epochs=1, max_steps=3, lr=1e-3))
    results = run_pipeline(run_dir=str(tmp_path / "run"), data=data, teacher=teacher, distill=distill)
    assert set(results) == {"teacher", "student"}
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    assert saved["student"]["parameters"] < saved["teacher"]["parameters"]
    assert 0.0 <= saved["student"]["accuracy"] <= 1.0
    assert (tmp_path / "run" / "config.yaml").exists()
    assert (tmp_path / "run" / "distill" / "model" / "config.json").exists()
    # resume: completed stages are reused, not retrained
    again = run_pipeline(run_dir=str(tmp_path / "run"), resume=True, data=data, teacher=teacher, distill=distill)
    assert again == results


def test_pipeline_verb_rejects_bad_config(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  layers: null\n  student: null\n")
    with pytest.raises(SystemExit) as err:
        main(["pipeline", "--config", str(bad)])
    assert err.value.code != 0
    assert "layers" in capsys.readouterr().err
