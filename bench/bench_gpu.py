"""One-call GPU latency benchmark of DeepVision-VLA per chunk (issue 7): eager vs fast path, stages, AGVP, ONNX.

    python bench/bench_gpu.py [--out-dir bench/results] [--iters 200] [--warmup 20] [--budget-s 540] [--compile]
    python bench/bench_gpu.py --smoke [--out-dir DIR]   # CPU, tiny config, a few calls: the same code paths

CUDA: the paper config (Qwen3-VL-4B + DINOv3 ViT-H+/16 @ 512 px, 16 coupled layers) with random weights in
bf16, batch 1, one camera, a 20-byte instruction (bucket 32), K = 512 of 1024 expert patches. In one run it
measures, per chunk (CUDA events around each call, the device synchronised after each, median and p99 over
--iters calls after --warmup): the eager forward, the eager baseline without the expert, the fast path
(fast_inference.StaticInference: whole step in one CUDA graph, expert shallow layers on a second stream)
with its relative error against the eager chunk, AGVP's share (saliency computed vs AGVP's own selection
given as a fixed index set), the keep-ratio sweep, stage times (CUDA events per stage, eager), the policy's
end-to-end predict, the top CUDA kernels, optionally torch.compile, and ONNX Runtime parts.

Every variant runs in isolation: an error is recorded in the JSON and the run goes on. The JSON and the
markdown table are rewritten after every variant, so a run killed at its time limit still leaves numbers.
Writes <out-dir>/gpu_latency.{json,md,png} (smoke: gpu_latency_smoke.*).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort
import torch
import transformers
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing

from bench.bench_model import observation, summary  # noqa: E402  (one percentile rule for every bench)
from vla_ros.model import onnx_export  # noqa: E402
from vla_ros.model.checkpoint import LoadedCheckpoint, placeholder_norm_stats  # noqa: E402
from vla_ros.model.configuration import DeepVisionConfig  # noqa: E402
from vla_ros.model.fast_inference import StaticInference  # noqa: E402
from vla_ros.model.modeling_deepvision import STAGE_PREFIX, STAGES, DeepVisionVLA  # noqa: E402
from vla_ros.model.policy import DeepVisionPolicy  # noqa: E402
from vla_ros.model.processing import DeepVisionProcessor, ModelInputs, build_byte_tokenizer  # noqa: E402

INSTRUCTION = "pick up the red cube"  # 20 bytes: bucket 32 with the byte tokenizer, as a short Qwen prompt
KEEP_RATIO = 0.5  # DV §4.1
SWEEP_KEEP_RATIOS = (0.25, 1.0)
TARGET_P50_MS = 10.0  # issue 7
ONNX_REL_TOLERANCE = {"float32": 1e-4, "float16": 2e-2}  # max |onnx - torch| / max |torch|


# ---- timing ----

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(call: Callable[[], object], device: torch.device, iters: int, warmup: int, label: str
            ) -> dict[str, list[float]]:
    """Per-call latency: CUDA events around each call on CUDA (device synchronised after each), wall clock too."""
    for _ in range(warmup):
        call()
    synchronize(device)
    events_ms, wall_ms = [], []
    start, end = ((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  if device.type == "cuda" else (None, None))
    for _ in tqdm(range(iters), desc=label, leave=False, mininterval=2.0):
        begin_s = time.perf_counter()
        if start is not None:
            start.record()
        call()
        if end is not None:
            end.record()
            end.synchronize()
            events_ms.append(start.elapsed_time(end))
        wall_ms.append((time.perf_counter() - begin_s) * 1e3)
    return {"latency_ms": events_ms or wall_ms, "wall_ms": wall_ms}


def stage_totals_ms(prof: torch.profiler.profile, cuda: bool) -> tuple[dict[str, float], str]:
    """Milliseconds per forward() stage from the profiler's STAGE_PREFIX ranges: on CUDA the device-side
    ranges (GPU time) when the profiler recorded them, else the host-side ranges (wall time)."""
    def totals(on_device: bool) -> dict[str, float]:
        out: dict[str, float] = {}
        for event in prof.events():
            if event.name.startswith(STAGE_PREFIX) and (event.device_type == DeviceType.CUDA) == on_device:
                name = event.name[len(STAGE_PREFIX):]
                out[name] = out.get(name, 0.0) + event.time_range.elapsed_us() / 1e3
        return out

    device = totals(True) if cuda else {}
    return (device, "device") if device else (totals(False), "host")


# ---- the setup ----

class Setup:
    """Models, inputs and eager reference outputs shared by all variants."""

    def __init__(self, smoke: bool, device: torch.device) -> None:
        self.device = device
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.config = DeepVisionConfig.tiny() if smoke else DeepVisionConfig.paper()
        self.baseline_config = DeepVisionConfig.tiny(baseline=True) if smoke else DeepVisionConfig.paper(baseline=True)
        torch.manual_seed(0)
        with torch.device(device):
            self.model = DeepVisionVLA(self.config).to(self.dtype).eval()
            # The baseline shares the VLM (same weights, less memory and build time); its head is its own.
            self.baseline = DeepVisionVLA(self.baseline_config, vlm=self.model.vlm).to(self.dtype).eval()
        self.processor = self._processor(self.config)
        self.baseline_processor = self._processor(self.baseline_config)
        self.observation = observation(self.config, instruction=INSTRUCTION)
        self.inputs = self._inputs(self.processor)
        self.baseline_inputs = self._inputs(self.baseline_processor)
        with torch.inference_mode():
            self.reference = self.model(self.inputs, keep_ratio=KEEP_RATIO)  # eager chunk the fast path must match
        self.kept_index = self.reference.kept_patch_index.clone()  # AGVP's own choice, reused as a fixed set

    @staticmethod
    def _processor(config: DeepVisionConfig) -> DeepVisionProcessor:
        return DeepVisionProcessor(config, build_byte_tokenizer(config.vlm.tokens), placeholder_norm_stats(config))

    def _inputs(self, processor: DeepVisionProcessor) -> ModelInputs:
        inputs = processor.observations_to_inputs([self.observation], self.device)
        pixels = {"vla_pixels": inputs.vla_pixels.to(self.dtype),
                  "expert_pixels": None if inputs.expert_pixels is None else inputs.expert_pixels.to(self.dtype)}
        return ModelInputs(**{**vars(inputs), **pixels})

    def shapes(self) -> dict[str, Any]:
        cfg, inputs = self.config, self.inputs
        grid_h, grid_w = cfg.expert.patch_grid
        token_h, token_w = cfg.vlm.token_grid
        keep = self.model.kept_patches_per_camera(KEEP_RATIO)
        sequence = inputs.input_ids.shape[1] + cfg.robot.use_proprio + cfg.robot.chunk_size
        return {"batch": 1, "cameras": len(cfg.robot.camera_names), "camera_image_px": list(cfg.robot.camera_image_size_px),
                "vla_image_px": list(cfg.vlm.image_size_px), "expert_image_px": list(cfg.expert.image_size_px),
                "instruction": INSTRUCTION, "prompt_tokens": int(inputs.input_ids.shape[1]),
                "instruction_bucket": int(inputs.input_ids.shape[1]) - self.processor.fixed_prompt_tokens,
                "vla_sequence_tokens": int(sequence), "vla_visual_tokens_per_camera": token_h * token_w,
                "expert_patches_per_camera": grid_h * grid_w, "keep_ratio": KEEP_RATIO,
                "kept_expert_tokens_K": keep, "coupled_sequence_tokens": int(sequence + keep),
                "chunk_size": cfg.robot.chunk_size, "action_dim": cfg.robot.action_dim,
                "llm_layers": cfg.vlm.text.num_layers, "coupled_layers": cfg.coupling.num_layers,
                "expert_layers": cfg.expert.num_layers, "vla_pixels": list(inputs.vla_pixels.shape),
                "expert_pixels": list(inputs.expert_pixels.shape)}

    def policy(self, fast_inference: bool) -> DeepVisionPolicy:
        policy = DeepVisionPolicy(LoadedCheckpoint(model=self.model, processor=self.processor), self.device,
                                  fast_inference=fast_inference)
        policy.set_keep_ratio(KEEP_RATIO)
        return policy


def chunk_error(actions: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Relative L2 and max abs error of a chunk against the eager reference, in fp32."""
    diff = actions.float() - reference.float()
    return {"rel_l2_error": float(diff.norm() / reference.float().norm().clamp_min(1e-12)),
            "max_abs_error": float(diff.abs().max())}


# ---- the run ----

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device("cpu" if args.smoke else "cuda")
        self.started_s = time.monotonic()
        suffix = "_smoke" if args.smoke else ""
        self.json_path = args.out_dir / f"gpu_latency{suffix}.json"
        self.md_path = self.json_path.with_suffix(".md")
        self.png_path = self.json_path.with_suffix(".png")
        self.raw: dict[str, list[float]] = {}  # latency samples for the plot
        self.report: dict[str, Any] = {"created_unix_s": time.time(), "mode": "smoke" if args.smoke else "gpu",
                                       "iters": args.iters, "warmup": args.warmup, "environment": environment(),
                                       "variants": {}, "derived": {}}
        self.setup: Setup | None = None
        self.current = ""  # name of the variant being run (labels its samples)

    def remaining_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started_s)

    def run(self, name: str, description: str, body: Callable[[], dict[str, Any]], needs_s: float = 15.0) -> None:
        """Run one variant; record its result, its error, or that the time budget ran out; save."""
        entry: dict[str, Any] = {"description": description}
        if self.remaining_s() < needs_s:
            entry["skipped"] = f"time budget: {self.remaining_s():.0f} s left, needs ~{needs_s:.0f} s"
        else:
            # Saved before it runs: if the device's time limit kills the process, the JSON says where.
            self.report["variants"][name] = {**entry, "status": "started, no result yet"}
            self.save()
            start_s = time.monotonic()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                entry.update(body())
                if self.device.type == "cuda":
                    entry["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            except Exception as err:  # one variant's failure must not cost the others (one GPU call)
                entry["error"] = f"{type(err).__name__}: {err}"[:2000]
                entry["traceback_tail"] = traceback.format_exc().splitlines()[-12:]
            entry["variant_wall_s"] = time.monotonic() - start_s
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.report["variants"][name] = entry
        status = entry.get("error") or entry.get("skipped") or (
            f"p50 {entry['latency']['p50_ms']:.3f} ms" if "latency" in entry else "done")
        print(f"[bench_gpu] {name}: {status}", flush=True)
        self.save()

    def timed(self, name: str, call: Callable[[], object], iters: int | None = None) -> dict[str, Any]:
        samples = measure(call, self.device, iters or self.args.iters, self.args.warmup, name)
        self.raw[name] = samples["latency_ms"]
        return {"latency": summary(samples["latency_ms"]), "wall": summary(samples["wall_ms"]),
                "timer": "cuda_events" if self.device.type == "cuda" else "perf_counter"}

    # ---- variants ----

    def build(self) -> dict[str, Any]:
        start_s = time.monotonic()
        self.setup = Setup(self.args.smoke, self.device)
        synchronize(self.device)
        s = self.setup
        self.report["precision"] = str(s.dtype).removeprefix("torch.")
        self.report["config"] = "tiny" if self.args.smoke else "paper"
        self.report["shapes"] = s.shapes()
        self.report["parameter_counts"] = {"full": s.model.parameter_counts(),
                                           "baseline": s.baseline.parameter_counts()}
        return {"build_s": time.monotonic() - start_s}

    def eager(self, baseline: bool, fixed_index: bool = False) -> dict[str, Any]:
        s = self.setup
        model, inputs = (s.baseline, s.baseline_inputs) if baseline else (s.model, s.inputs)
        kept = s.kept_index if fixed_index else None

        def call() -> torch.Tensor:
            with torch.inference_mode():
                return model(inputs, keep_ratio=KEEP_RATIO, kept_patch_index=kept).actions
        result = self.timed(self.current, call)
        if not baseline:
            result["chunk_vs_eager"] = chunk_error(call(), s.reference.actions)
        return result

    def fast(self, baseline: bool = False, keep_ratio: float = KEEP_RATIO, expert_stream: bool = True,
             fixed_index: bool = False, compile_mode: str | None = None) -> dict[str, Any]:
        s = self.setup
        model, inputs = (s.baseline, s.baseline_inputs) if baseline else (s.model, s.inputs)
        if compile_mode is not None:
            model = torch.compile(model, mode=compile_mode, dynamic=False)
        start_s = time.monotonic()
        static = StaticInference(model, inputs, keep_ratio, expert_stream=expert_stream,
                                 kept_patch_index=s.kept_index if fixed_index else None)
        synchronize(self.device)
        result = {"prepare_s": time.monotonic() - start_s, "cuda_graph": static.uses_cuda_graph,
                  "expert_stream": static.uses_expert_stream, "keep_ratio": keep_ratio,
                  "kept_expert_tokens_K": 0 if baseline else s.model.kept_patches_per_camera(keep_ratio)}
        result.update(self.timed(self.current, lambda: static(inputs).actions))
        out = static(inputs)
        if baseline:
            with torch.inference_mode():
                result["chunk_vs_eager"] = chunk_error(out.actions, s.baseline(inputs).actions)
        elif keep_ratio == KEEP_RATIO:
            result["chunk_vs_eager"] = chunk_error(out.actions, s.reference.actions)
            if out.kept_patch_index is not None:
                result["same_kept_patches_as_eager"] = bool(torch.equal(out.kept_patch_index, s.kept_index))
        return result

    def stages(self, baseline: bool) -> dict[str, Any]:
        """Eager forward with a timer around each stage (no expert stream, so the stages run one after another)."""
        s = self.setup
        model, inputs = (s.baseline, s.baseline_inputs) if baseline else (s.model, s.inputs)
        calls = max(3, min(50, self.args.iters // 4))
        per_stage: dict[str, list[float]] = {}
        totals = []
        for _ in range(2):  # warm-up
            with torch.inference_mode():
                model(inputs, keep_ratio=KEEP_RATIO)
        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        clock = "host"
        for _ in range(calls):
            with torch.profiler.profile(activities=activities) as prof:
                with torch.inference_mode(), torch.profiler.record_function(STAGE_PREFIX + "whole_forward"):
                    model(inputs, keep_ratio=KEEP_RATIO)
                if cuda:
                    torch.cuda.synchronize()
            stage_ms, clock = stage_totals_ms(prof, cuda)
            totals.append(stage_ms.pop("whole_forward"))
            for name, value in stage_ms.items():
                per_stage.setdefault(name, []).append(value)
        whole_p50 = statistics.median(totals)
        table = {name: {"p50_ms": statistics.median(values), "share_of_forward": statistics.median(values) / whole_p50}
                 for name, values in sorted(per_stage.items(), key=lambda item: STAGES.index(item[0]))}
        attributed = sum(row["p50_ms"] for row in table.values())
        return {"calls": calls, "whole_forward_p50_ms": whole_p50, "stages": table,
                "unattributed_ms": whole_p50 - attributed,
                "clock": clock,
                "note": "eager, torch.profiler ranges around each stage (the profiler adds a little overhead)"}

    def policy_predict(self, fast_inference: bool) -> dict[str, Any]:
        """End to end: numpy observation -> preprocessing on the device -> forward -> physical chunk on the host."""
        policy = self.setup.policy(fast_inference)
        obs = self.setup.observation
        policy.predict(obs)  # first call prepares (captures) the static forward
        result = self.timed(self.current, lambda: policy.predict(obs))
        result["fast_inference"] = fast_inference
        return result

    def kernel_profile(self) -> dict[str, Any]:
        """Top CUDA kernels of one eager forward, and which SDPA kernels ran (flash / efficient / cudnn / math)."""
        s = self.setup
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.inference_mode(), torch.profiler.profile(activities=activities) as profiler:
            s.model(s.inputs, keep_ratio=KEEP_RATIO)
            torch.cuda.synchronize()
        rows = []
        for event in profiler.key_averages():
            device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
            if device_us and not event.key.startswith("aten::"):
                rows.append((event.key, device_us, event.count))
        rows.sort(key=lambda row: -row[1])
        names = " ".join(row[0].lower() for row in rows)
        attention = {kind: kind in names for kind in ("flash", "fmha", "efficient", "cudnn", "softmax")}
        return {"top_kernels": [{"name": n[:120], "device_ms": us / 1e3, "calls": c} for n, us, c in rows[:15]],
                "kernel_families_seen": attention, "distinct_kernels": len(rows)}

    def onnx_parts(self, paper: bool) -> dict[str, Any]:
        """Export the vision parts; check agreement on ONNX Runtime; time ORT against torch on the same device.

        paper=False: tiny fp32 parts on the CPU provider vs torch CPU. paper=True: the paper model's parts in
        fp16 on the CUDA (or TensorRT) provider with I/O binding vs torch CUDA (fp16 and the bf16 model).
        """
        providers = ort.get_available_providers()
        result: dict[str, Any] = {"onnxruntime": ort.__version__, "available_providers": providers, "parts": {}}
        if paper:
            wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in providers]
            # TensorRT builds an engine per part at session creation (minutes): only with time to spare.
            if "TensorrtExecutionProvider" in wanted and (self.args.no_tensorrt or self.remaining_s() < 240):
                wanted.remove("TensorrtExecutionProvider")
            if not wanted:
                result["not_measured"] = "no CUDA or TensorRT execution provider in this onnxruntime build"
                return result
            model, inputs, dtype, device = self.setup.model, self.setup.inputs, torch.float16, self.device
        else:
            wanted = ["CPUExecutionProvider"]
            torch.manual_seed(0)
            tiny = DeepVisionConfig.tiny()
            model = DeepVisionVLA(tiny).eval()
            processor = Setup._processor(tiny)
            inputs = processor.observations_to_inputs([observation(tiny, instruction=INSTRUCTION)], "cpu")
            dtype, device = torch.float32, torch.device("cpu")
        iters = max(5, self.args.iters // 4)
        with tempfile.TemporaryDirectory() as tmp:
            for part in onnx_export.PARTS:
                row: dict[str, Any] = {}
                result["parts"][part] = row
                try:
                    module = onnx_export.part_module(model, part, dtype=dtype)
                    pixels = onnx_export.part_input(inputs, part).to(dtype)
                    start_s = time.monotonic()
                    path = onnx_export.export_part(module, pixels, Path(tmp) / f"{part}.onnx")
                    row["export_s"] = time.monotonic() - start_s
                    start_s = time.monotonic()
                    threads = torch.get_num_threads() if device.type == "cpu" else None
                    sess = onnx_export.session(path, wanted, threads=threads)
                    row["session_s"] = time.monotonic() - start_s
                    row["providers_used"] = sess.get_providers()
                    with torch.inference_mode():
                        reference = module(pixels)
                    if device.type == "cuda":
                        runner = onnx_export.DeviceRunner(sess, pixels)
                        runner()
                        outputs = runner.outputs()
                        ort_call: Callable[[], object] = runner
                    else:
                        outputs = onnx_export.run_session(sess, pixels)
                        ort_call = lambda: onnx_export.run_session(sess, pixels)  # noqa: E731
                    agreement = onnx_export.agreement(reference, outputs)
                    tolerance = ONNX_REL_TOLERANCE[str(dtype).removeprefix("torch.")]
                    row["agreement"] = {"max_abs_error": agreement.max_abs_error,
                                        "max_rel_error": agreement.max_rel_error, "rel_tolerance": tolerance,
                                        "within_tolerance": agreement.within(tolerance)}

                    def torch_call() -> object:
                        with torch.inference_mode():
                            return module(pixels)
                    row["torch"] = summary(measure(torch_call, device, iters, 2, f"{part} torch")["latency_ms"])
                    row["onnxruntime"] = summary(measure(ort_call, device, iters, 2, f"{part} ort")["latency_ms"])
                    row["ort_speedup_vs_torch"] = row["torch"]["p50_ms"] / row["onnxruntime"]["p50_ms"]
                    row["dtype"] = str(dtype).removeprefix("torch.")
                    row["input_shape"] = list(pixels.shape)
                    del module, sess
                except Exception as err:  # a part that does not export or run is a finding, not a crash
                    row["error"] = f"{type(err).__name__}: {err}"[:2000]
        return result

    # ---- driver ----

    def main(self) -> None:
        args = self.args
        self.run("build", "build the models (random weights) and the eager reference chunk", self.build)
        if self.setup is None:
            return
        plan: list[tuple[str, str, Callable[[], dict[str, Any]], float]] = [
            ("eager_full", "eager forward, DeepVision-VLA, AGVP keep 0.5", lambda: self.eager(False), 20),
            ("eager_baseline", "eager forward, QwenVLA-OFT baseline (no expert)", lambda: self.eager(True), 20),
            ("fast_full", "StaticInference (CUDA: one graph of the whole step + expert stream), keep 0.5",
             lambda: self.fast(), 20),
            ("fast_baseline", "StaticInference, baseline", lambda: self.fast(baseline=True), 20),
            ("stages_eager_full", "stage times, eager, DeepVision-VLA", lambda: self.stages(False), 15),
            ("stages_eager_baseline", "stage times, eager, baseline", lambda: self.stages(True), 15),
            ("fast_full_fixed_index", "fast path with AGVP's selection given as a fixed index set (no saliency)",
             lambda: self.fast(fixed_index=True), 20),
            ("eager_full_fixed_index", "eager with the fixed index set (no saliency)",
             lambda: self.eager(False, fixed_index=True), 20),
            ("fast_full_no_stream", "fast path without the second stream for the expert",
             lambda: self.fast(expert_stream=False), 20),
            *[(f"fast_full_keep_{ratio}", f"fast path, keep ratio {ratio}",
               (lambda r=ratio: self.fast(keep_ratio=r)), 20) for ratio in SWEEP_KEEP_RATIOS],
            ("policy_predict_fast", "DeepVisionPolicy.predict end to end (preprocess + fast forward + host copy)",
             lambda: self.policy_predict(True), 20),
            ("policy_predict_eager", "DeepVisionPolicy.predict end to end, eager", lambda: self.policy_predict(False),
             25),
        ]
        if self.device.type == "cuda":
            plan.append(("kernel_profile", "torch.profiler over one eager forward", self.kernel_profile, 15))
        plan.append(("onnx_tiny_cpu", "ONNX parts at tiny size: ORT CPU provider vs torch CPU (fp32)",
                     lambda: self.onnx_parts(paper=False), 15))
        if self.device.type == "cuda":
            plan.append(("onnx_paper_gpu", "ONNX parts at paper size: ORT CUDA/TensorRT provider vs torch (fp16)",
                         lambda: self.onnx_parts(paper=True), 60))
        if args.compile:
            plan.append(("fast_full_compiled", f"torch.compile(mode={args.compile_mode}) inside the CUDA graph, "
                         "no expert stream", lambda: self.fast(expert_stream=False, compile_mode=args.compile_mode),
                         240))
        for name, description, body, needs_s in plan:
            if needs_s >= 60:  # a long, riskier variant next: have the plot and derived numbers on disk first
                self.derive()
                self.save(plot=True)
            self.current = name
            self.run(name, description, body, needs_s)
        self.derive()
        self.save(plot=True)

    def derive(self) -> None:
        variants = self.report["variants"]

        def p50(name: str) -> float | None:
            return variants.get(name, {}).get("latency", {}).get("p50_ms")

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None
        derived = {
            "speedup_fast_vs_eager_full": ratio(p50("eager_full"), p50("fast_full")),
            "speedup_fast_vs_eager_baseline": ratio(p50("eager_baseline"), p50("fast_baseline")),
            "expert_cost_eager": ratio(p50("eager_full"), p50("eager_baseline")),
            "expert_cost_fast": ratio(p50("fast_full"), p50("fast_baseline")),
            "agvp_share_of_step_eager": _share(p50("eager_full"), p50("eager_full_fixed_index")),
            "agvp_share_of_step_fast": _share(p50("fast_full"), p50("fast_full_fixed_index")),
            "expert_stream_speedup": ratio(p50("fast_full_no_stream"), p50("fast_full")),
            "fast_full_p50_ms": p50("fast_full"),
            "fast_full_p99_over_p50": variants.get("fast_full", {}).get("latency", {}).get("p99_over_p50"),
            "fast_vs_eager_chunk": variants.get("fast_full", {}).get("chunk_vs_eager"),
        }
        # The target is about the paper model on a GPU; a tiny CPU run says nothing about it.
        applies = self.report["mode"] == "gpu" and p50("fast_full") is not None
        derived["target_p50_le_10ms"] = p50("fast_full") <= TARGET_P50_MS if applies else None
        self.report["derived"] = derived

    def save(self, plot: bool = False) -> None:
        self.report["elapsed_s"] = time.monotonic() - self.started_s
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        self.md_path.write_text(markdown(self.report))
        if plot:
            make_plot(self.report, self.raw, self.png_path)


def _share(with_agvp: float | None, fixed: float | None) -> float | None:
    return None if with_agvp is None or fixed is None else (with_agvp - fixed) / with_agvp


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "onnxruntime": ort.__version__,
                           "cpu_threads": torch.get_num_threads(), "platform": platform.platform()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update({"gpu": props.name, "gpu_memory_gib": props.total_memory / 2**30,
                    "multiprocessors": props.multi_processor_count, "capability": f"{props.major}.{props.minor}",
                    "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "sdpa_backends_enabled": {"flash": torch.backends.cuda.flash_sdp_enabled(),
                                              "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                                              "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                                              "math": torch.backends.cuda.math_sdp_enabled()}})
        try:
            query = "name,driver_version,clocks.max.sm,clocks.sm,power.limit,pstate"
            line = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=20, check=True).stdout.strip().splitlines()[0]
            env["nvidia_smi"] = dict(zip(query.split(","), (v.strip() for v in line.split(","))))
            env["driver"] = env["nvidia_smi"]["driver_version"]
        except (OSError, subprocess.SubprocessError, IndexError) as err:
            env["nvidia_smi_error"] = str(err)
    return env


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [f"# DeepVision-VLA latency per chunk ({report['mode']})", "",
             f"Device: {env.get('gpu', 'CPU')} (driver {env.get('driver', '-')}), torch {env['torch']}, "
             f"transformers {env['transformers']}, onnxruntime {env['onnxruntime']}; config "
             f"{report.get('config', '?')}, precision {report.get('precision', '?')}, batch 1; "
             f"{report['iters']} calls after {report['warmup']} warm-up.", ""]
    shapes = report.get("shapes")
    if shapes:
        lines += ["Shapes: " + ", ".join(f"{k}={v}" for k, v in shapes.items()), ""]
    lines += ["| variant | p50 ms | p90 ms | p99 ms | p99/p50 | speed-up vs eager_full | rel. error vs eager | note |",
              "|---|---|---|---|---|---|---|---|"]
    eager_p50 = report["variants"].get("eager_full", {}).get("latency", {}).get("p50_ms")
    for name, entry in report["variants"].items():
        if "latency" in entry:
            lat = entry["latency"]
            error = entry.get("chunk_vs_eager", {}).get("rel_l2_error")
            speedup = f"{eager_p50 / lat['p50_ms']:.2f}x" if eager_p50 else "-"
            lines.append(f"| {name} | {lat['p50_ms']:.3f} | {lat['p90_ms']:.3f} | {lat['p99_ms']:.3f} | "
                         f"{lat['p99_over_p50']:.2f} | {speedup} | {'-' if error is None else f'{error:.2e}'} | "
                         f"{entry['description']} |")
        elif "error" in entry or "skipped" in entry:
            lines.append(f"| {name} | - | - | - | - | - | - | {entry.get('error') or entry.get('skipped')} |")
    derived = report.get("derived") or {}
    if derived:
        lines += ["", "Derived: " + ", ".join(f"{k}={_fmt(v)}" for k, v in derived.items())]
    for name in ("stages_eager_full", "stages_eager_baseline"):
        stages = report["variants"].get(name, {}).get("stages")
        if stages:
            lines += ["", f"{name} (whole forward p50 {report['variants'][name]['whole_forward_p50_ms']:.3f} ms):", "",
                      "| stage | p50 ms | share |", "|---|---|---|"]
            lines += [f"| {stage} | {row['p50_ms']:.3f} | {row['share_of_forward']:.1%} |" for stage, row in stages.items()]
    for name in ("onnx_tiny_cpu", "onnx_paper_gpu"):
        parts = report["variants"].get(name, {}).get("parts")
        if parts:
            lines += ["", f"{name}:", "", "| part | torch p50 ms | ORT p50 ms | ORT speed-up | max rel. error | ok |",
                      "|---|---|---|---|---|---|"]
            for part, row in parts.items():
                if "error" in row:
                    lines.append(f"| {part} | - | - | - | - | {row['error'][:80]} |")
                elif "onnxruntime" in row:
                    lines.append(f"| {part} | {row['torch']['p50_ms']:.3f} | {row['onnxruntime']['p50_ms']:.3f} | "
                                 f"{row['ort_speedup_vs_torch']:.2f} | {row['agreement']['max_rel_error']:.1e} | "
                                 f"{row['agreement']['within_tolerance']} |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def make_plot(report: dict[str, Any], raw: dict[str, list[float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = report["environment"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.45 * max(len(raw), 4) + 2.5),
                                      gridspec_kw={"width_ratios": [3, 2]})
    if raw:
        try:
            left.boxplot(list(raw.values()), orientation="horizontal", tick_labels=list(raw), flierprops={"markersize": 2})
        except TypeError:  # matplotlib < 3.10 (the GPU image's version is unknown)
            left.boxplot(list(raw.values()), vert=False, labels=list(raw), flierprops={"markersize": 2})
        left.set_xscale("log")
        if report["mode"] == "gpu":  # the target is for the paper model on a GPU
            left.axvline(TARGET_P50_MS, color="tab:red", linestyle="--", label=f"target {TARGET_P50_MS:g} ms")
            left.legend(loc="lower right")
    left.set_xlabel("latency per chunk [ms], log scale (box: quartiles, whiskers 1.5 IQR)")
    left.set_title(f"{env.get('gpu', 'CPU')}, {report.get('precision', '?')}, batch 1 ({report['mode']})")
    rows = [name for name in ("stages_eager_full", "stages_eager_baseline")
            if report["variants"].get(name, {}).get("stages")]
    for stage in STAGES:
        widths = [report["variants"][name]["stages"].get(stage, {}).get("p50_ms", 0.0) for name in rows]
        if rows and any(widths):
            lefts = [sum(report["variants"][name]["stages"].get(s, {}).get("p50_ms", 0.0)
                         for s in STAGES[:STAGES.index(stage)]) for name in rows]
            right.barh(rows, widths, left=lefts, label=stage)
    right.set_xlabel("eager stage time p50 [ms]")
    right.set_title("where the eager step goes")
    if rows:
        right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny config, few calls (what the tests run)")
    parser.add_argument("--out-dir", type=Path, default=Path("bench/results"))
    parser.add_argument("--iters", type=int, default=None, help="timed calls per variant (GPU 200, smoke 4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (GPU 20, smoke 1)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip variants once this much wall time is spent (GPU 540, smoke 600)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile inside the CUDA graph "
                        "(minutes of compilation; runs last)")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs", help="torch.compile mode")
    parser.add_argument("--no-tensorrt", action="store_true", help="skip ORT's TensorRT provider even if present")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --smoke on a CPU")
    args.iters = args.iters or (4 if args.smoke else 200)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 20)
    args.budget_s = args.budget_s or (600.0 if args.smoke else 540.0)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    bench = Bench(parse_args(argv))
    bench.main()
    print(bench.md_path.read_text(), flush=True)
    print(f"wrote {bench.json_path}, {bench.md_path} and {bench.png_path}", flush=True)
    return bench.report


if __name__ == "__main__":
    main()
