"""The search stage on the tiny model: trials, the study on disk, the chosen recipe applied to the later stages."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from lit_compress.bench.suite import BenchmarkSettings
from lit_compress.pipeline import BenchmarkOptions, run_pipeline
from lit_compress.pipeline.search import SearchOptions
from lit_compress.tune.compression import CompressionSpace
from tests.pipeline.test_pipeline import tiny_run


def search_run(csv_files, tiny_model_dir) -> dict:
    sections = tiny_run(csv_files, tiny_model_dir, steps=4, epochs=1)
    pruning = {"class_path": "lit_compress.prune.StructuredPruning",
               "init_args": {"head_pruning_ratio": 0.5, "ffn_pruning_ratio": 0.5}}
    sections["prune"] = {"vocab_min_frequency": 1, "trainer": {"callbacks": [pruning]}}
    sections["qat"] = {"schemes": ["auto"], "trainer": {"max_steps": 2}}
    space = CompressionSpace(depths=(1, 2), head_ratios=(0.0, 0.5), ffn_ratios=(0.25, 0.5), temperatures=(2.0,),
                             alphas=(0.5,))
    return {**sections, "search_minutes": 5.0, "search": SearchOptions(space=space, max_trials=3, startup_trials=2),
            "benchmark": BenchmarkOptions(BenchmarkSettings(runs=3, warmup=1, batch_sizes=(1,), throughput_runs=1))}


def test_search_chooses_a_recipe_and_the_stages_use_it(tmp_path, csv_files, tiny_model_dir) -> None:
    run = tmp_path / "run"
    results = run_pipeline(run_dir=str(run), **search_run(csv_files, tiny_model_dir))
    record = json.loads((run / "search" / "stage.json").read_text())
    assert record["trials"] + record["pruned"] == 3
    chosen = record["candidate"]
    # the distill stage distils the deepest student of the space; trials keep layers of it
    distill = yaml.safe_load((run / "distill" / "recipe.yaml").read_text())
    assert distill["model"]["init_args"]["student_layers"] == [0, 1]
    first = yaml.safe_load((run / "search" / "trials" / "trial_0000" / "recipe.yaml").read_text())
    assert first["model"]["init_args"]["student"] == str(run / "search" / "trials" / "trial_0000" / "student_init")
    assert first["model"]["init_args"]["teacher"] == str(run / "search" / "teacher")
    prune = yaml.safe_load((run / "prune" / "recipe.yaml").read_text())
    assert prune["model"]["init_args"]["temperature"] == chosen["temperature"]
    ramps = next(c for c in prune["trainer"]["callbacks"] if c["class_path"].endswith("StructuredPruning"))["init_args"]
    assert ramps["head_pruning_ratio"]["init_args"]["final_sparsity"] == chosen["head_ratio"]
    assert ramps["ffn_pruning_ratio"]["init_args"]["final_sparsity"] == chosen["ffn_ratio"]
    # heads of the tiny model: 4 per layer; the ratio cut them
    assert results.pruned.architecture["num_heads"] == [round(4 * (1 - chosen["head_ratio"]))] * len(chosen["layers"])
    assert (run / "search" / "study.db").is_file() and "| trial |" in (run / "search" / "front.md").read_text()
    assert record["front"] and all(row["latency_ms"] > 0 for row in record["front"])
    scheme = json.loads((run / "qat_scheme" / "stage.json").read_text())
    assert [q.scheme for q in results.quantized] == [scheme["scheme"]]
    assert scheme["p50_ms"][scheme["scheme"]] == min(scheme["p50_ms"].values())
    assert not any(p.suffix == ".safetensors" for p in (run / "search" / "trials").rglob("*")), "trial models removed"
    # a resumed run reuses the finished search (no new trials)
    again = run_pipeline(run_dir=str(run), resume=True, **search_run(csv_files, tiny_model_dir))
    assert json.loads((run / "search" / "stage.json").read_text()) == record
    # and the stages after it: the same pruned architecture (the benchmark re-measures, so on a tiny model whose
    # variants run within timing noise of each other the fastest-within-budget pick may differ between runs)
    assert again.pruned.architecture == results.pruned.architecture
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["search_minutes"] == 5.0 and config["search"]["space"]["depths"] == [1, 2]
    # benchmarks/search_proxies.py re-trains complete trials with the full prune stage and ranks them
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import search_proxies

    assert search_proxies.main(["--run_dir", str(run), "--k", "2", "--out", str(tmp_path / "check")]) == 0
    check = json.loads((tmp_path / "check" / "proxy_check.json").read_text())
    assert len(check["rows"]) == 2 and all(0.0 <= r["full_val_acc"] <= 1.0 for r in check["rows"])
    assert (tmp_path / "check" / f"trial_{check['rows'][0]['trial']:04d}" / "prune" / "stage.json").is_file()
