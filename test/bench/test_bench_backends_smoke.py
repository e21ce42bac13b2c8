"""bench/bench_backends.py in-process with one iteration: every backend builds, runs and lands in the JSON/PNG.

Numbers are not checked (no timing assertions); the parity fields are.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_backends.py"


def test_smoke_run_writes_every_backend(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_backends", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "backends.json"
    module.main(["--out", str(out), "--iters", "1", "--warmup", "0"])
    report = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    cases = {(r["case"], r["device"]) for r in report["results"]}
    assert {("tiny", "cpu"), ("deepvision_sim", "cpu")} <= cases
    for result in report["results"]:
        assert set(result["predict"]) == {"torch_eager", "torch_fast", "onnxruntime"}
        assert result["onnx_vs_eager"]["max_rel_error"] < 1e-4 and result["onnx_vs_eager"]["same_kept_patches"]
        assert set(result["ready_s"]) == {"torch_eager", "torch_fast", "onnxruntime", "onnxruntime_cached"}
