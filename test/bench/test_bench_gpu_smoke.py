"""bench/bench_gpu.py --smoke in-process: every variant's code path runs on the CPU and the JSON has its fields.

Numbers are not checked (no timing assertions); correctness fields (fast vs eager error, ONNX agreement) are.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vla_ros.model.modeling_deepvision import STAGES

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_writes_every_variant(bench_gpu, tmp_path):
    bench_gpu.main(["--smoke", "--out-dir", str(tmp_path), "--iters", "2", "--warmup", "0"])
    report = json.loads((tmp_path / "gpu_latency_smoke.json").read_text())
    assert (tmp_path / "gpu_latency_smoke.png").stat().st_size > 0
    assert "| fast_full |" in (tmp_path / "gpu_latency_smoke.md").read_text()

    assert report["mode"] == "smoke" and report["precision"] == "float32" and report["config"] == "tiny"
    assert {"python", "torch", "transformers", "onnxruntime"} <= set(report["environment"])
    assert report["shapes"]["kept_expert_tokens_K"] == 32 and report["shapes"]["instruction_bucket"] == 32
    variants = report["variants"]
    failed = {name: entry.get("error") or entry.get("skipped") for name, entry in variants.items()
              if "error" in entry or "skipped" in entry}
    assert not failed
    timed = ["eager_full", "eager_baseline", "fast_full", "fast_baseline", "fast_full_fixed_index",
             "eager_full_fixed_index", "fast_full_no_stream", "fast_full_keep_0.25", "fast_full_keep_1.0",
             "policy_predict_fast", "policy_predict_eager"]
    for name in timed:
        latency = variants[name]["latency"]
        assert latency["n"] == 2 and latency["p50_ms"] > 0 and latency["p99_ms"] >= latency["p50_ms"], name
    for name in ("fast_full", "fast_full_fixed_index", "eager_full_fixed_index", "fast_baseline"):
        assert variants[name]["chunk_vs_eager"]["max_abs_error"] == 0.0, name  # CPU: exactly the eager chunk
    assert variants["fast_full"]["cuda_graph"] is False and variants["fast_full"]["same_kept_patches_as_eager"]
    assert list(variants["stages_eager_full"]["stages"]) == list(STAGES)
    assert "coupled" not in variants["stages_eager_baseline"]["stages"]
    for part in ("expert_shallow", "vla_vision"):
        assert variants["onnx_tiny_cpu"]["parts"][part]["agreement"]["within_tolerance"], part
    derived = report["derived"]
    assert derived["speedup_fast_vs_eager_full"] > 0 and derived["target_p50_le_10ms"] is None  # GPU only
    assert derived["agvp_share_of_step_fast"] is not None


def test_a_failing_variant_is_recorded_and_the_budget_skips_the_rest(bench_gpu, tmp_path):
    bench = bench_gpu.Bench(bench_gpu.parse_args(["--smoke", "--out-dir", str(tmp_path)]))
    bench.run("broken", "raises", lambda: {"value": 1 / 0})
    bench.run("fine", "returns", lambda: {"value": 1})
    bench.args.budget_s = 0.0
    bench.run("late", "past the budget", lambda: {"value": 2})
    variants = json.loads((tmp_path / "gpu_latency_smoke.json").read_text())["variants"]
    assert variants["broken"]["error"].startswith("ZeroDivisionError")
    assert variants["fine"]["value"] == 1
    assert "time budget" in variants["late"]["skipped"] and "value" not in variants["late"]
