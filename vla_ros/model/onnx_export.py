"""ONNX export of DeepVision-VLA for ONNX Runtime: the whole inference step, and two parts of it for benchmarks.

Whole step (PolicyStep, served by onnx_policy.OnnxPolicy): vision tower, the expert's shallow layers, the
shallow LLM layers with AGVP's saliency and top-K inside the graph, the coupled layers and the head, at static
shapes for one (batch, cameras, instruction bucket, K). Inputs are the ModelInputs tensors (STEP_INPUTS,
those the model reads); outputs are the normalised actions and, with an expert, AGVP's kept patch indices.
StepCache keeps exports on disk and rebuilds one when the checkpoint, the shapes or the exporter change.

Parts, each at the config's fixed image size (bench/bench_gpu.py times them against torch):
  expert_shallow: DINOv3 embeddings + the expert layers before the coupled block,
                  (B*C, 3, He, We) normalised pixels -> (B*C, prefix + P, C_e)
  vla_vision:     Qwen3-VL vision tower (backbones.qwen_vision_forward, grid tables baked in),
                  (B*C*Pq, 3*T*p*p) Qwen patches -> merged tokens (B*C*Nv, C) and one DeepStack feature each
Export uses the TorchScript exporter (dynamo=False), which needs no onnxscript.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import transformers
from torch import nn

from vla_ros.errors import ConfigError
from vla_ros.model import backbones
from vla_ros.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import ModelInputs

log = logging.getLogger(__name__)

PARTS = ("expert_shallow", "vla_vision")
OPSET = 17  # LayerNormalization is native from 17
INPUT_NAME = "pixels"
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float16: np.float16}

STEP_INPUTS = ("input_ids", "prompt_valid", "vla_pixels", "expert_pixels", "state")  # ModelInputs fields fed
STEP_OUTPUTS = ("actions", "kept_patch_index")
CACHE_ENV = "VLA_ROS_ONNX_CACHE"  # set: exports go under this directory instead of beside the checkpoint
MODEL_FILE = "model.onnx"
META_FILE = "meta.json"


class ExpertShallow(nn.Module):
    """The expert's uncoupled half as a module of its own (shares the expert's weights, not the VLM's)."""

    def __init__(self, model: DeepVisionVLA) -> None:
        super().__init__()
        if model.expert is None:
            raise ConfigError("onnx part 'expert_shallow': the model is the baseline (expert=None)")
        self.expert = model.expert
        self.num_layers = len(backbones.expert_layers(model.expert)) - model.config.coupling.num_layers

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return backbones.dinov3_shallow_forward(self.expert, pixels, self.num_layers)  # (B*C, prefix + P, C_e)


class VisionTower(nn.Module):
    """The Qwen3-VL vision tower at the config's image size (shares the model's weights)."""

    def __init__(self, model: DeepVisionVLA, device: torch.device) -> None:
        super().__init__()
        self.visual = model.vlm.visual
        grid_h, grid_w = model.config.vlm.token_grid
        merge = model.config.vlm.vision.spatial_merge_size
        self.grid = backbones.qwen_vision_grid(self.visual, grid_h * merge, grid_w * merge, device)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled, deepstack = backbones.qwen_vision_forward(self.visual, pixels, self.grid)
        return (pooled, *deepstack)


def part_module(model: DeepVisionVLA, part: str, dtype: torch.dtype | None = None) -> nn.Module:
    """The part as an eval-mode module; with `dtype`, a converted copy (the model itself is left alone)."""
    device = next(model.parameters()).device
    if part == "expert_shallow":
        module: nn.Module = ExpertShallow(model)
    elif part == "vla_vision":
        module = VisionTower(model, device)
    else:
        raise ConfigError(f"onnx part {part!r}: must be one of {PARTS}")
    if dtype is not None:
        module = copy.deepcopy(module).to(dtype)
    return module.eval()


def part_input(inputs: ModelInputs, part: str) -> torch.Tensor:
    """The tensor of `inputs` that the part reads."""
    if part == "expert_shallow":
        if inputs.expert_pixels is None:
            raise ConfigError("onnx part 'expert_shallow': the inputs have no expert_pixels (baseline model)")
        return inputs.expert_pixels
    if part == "vla_vision":
        return inputs.vla_pixels
    raise ConfigError(f"onnx part {part!r}: must be one of {PARTS}")


def export_part(module: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Trace `module` at the example's shape into an ONNX file; outputs are named output_0, output_1, ..."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        outputs = module(example)
    count = len(outputs) if isinstance(outputs, tuple) else 1
    with torch.no_grad(), warnings.catch_warnings():
        # Expected: shapes are traced as constants (static by design), and the TorchScript exporter is deprecated.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[f"output_{i}" for i in range(count)])
    return path


# ---- the whole inference step ----

class PolicyStep(nn.Module):
    """DeepVisionVLA.forward for one input signature and one keep ratio, as a function of tensors (for tracing).

    visual_index is the same for every observation of a config (processing.visual_token_index) and becomes a
    constant of the graph; so do the masks' rule table and every shape. Inputs: the STEP_INPUTS present in the
    example; outputs: actions (B, H, A) and, with an expert, kept_patch_index (B, C, K) int64.
    """

    def __init__(self, model: DeepVisionVLA, example: ModelInputs, keep_ratio: float) -> None:
        super().__init__()
        self.model = model
        self.keep_ratio = keep_ratio
        self.input_names = step_input_names(example)
        self.register_buffer("visual_index", example.visual_index, persistent=False)

    @property
    def output_names(self) -> tuple[str, ...]:
        return STEP_OUTPUTS if self.model.expert is not None else STEP_OUTPUTS[:1]

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        fields = dict(zip(self.input_names, tensors))
        inputs = ModelInputs(input_ids=fields["input_ids"], prompt_valid=fields["prompt_valid"],
                             vla_pixels=fields["vla_pixels"], expert_pixels=fields.get("expert_pixels"),
                             state=fields.get("state"), visual_index=self.visual_index)
        out = self.model(inputs, keep_ratio=self.keep_ratio)
        return (out.actions,) if out.kept_patch_index is None else (out.actions, out.kept_patch_index)


def step_input_names(inputs: ModelInputs) -> tuple[str, ...]:
    return tuple(name for name in STEP_INPUTS if getattr(inputs, name) is not None)


def step_tensors(inputs: ModelInputs, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The tensors PolicyStep reads, floating ones in `dtype` (the model's)."""
    tensors = (getattr(inputs, name) for name in step_input_names(inputs))
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)


def step_feed(inputs: ModelInputs, dtype: np.dtype) -> dict[str, np.ndarray]:
    """ModelInputs -> ONNX Runtime feed (host arrays; floating ones in the export's dtype)."""
    feed = {}
    for name in step_input_names(inputs):
        array = getattr(inputs, name).detach().cpu().numpy()
        feed[name] = array.astype(dtype, copy=False) if np.issubdtype(array.dtype, np.floating) else array
    return feed


def export_step(step: PolicyStep, example: ModelInputs, path: str | Path) -> Path:
    """Trace the whole step at the example's shapes into `path` (weights > 2 GB go to files beside it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = next(step.model.parameters()).dtype
    with torch.no_grad(), warnings.catch_warnings():
        # Expected: shapes are traced as constants (static by design), and the TorchScript exporter is deprecated.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)  # "Constant folding ... index_put": shapes are static anyway
        torch.onnx.export(step, step_tensors(example, dtype), str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(step.input_names), output_names=list(step.output_names))
    return path


@dataclasses.dataclass(frozen=True)
class StepShape:
    """What fixes an exported step's shapes; its name is the cache entry's directory."""

    batch: int
    cameras: int
    prompt_tokens: int  # fixed prompt tokens + instruction bucket
    keep: int  # K, expert patches kept per camera (0: baseline)
    dtype: str  # "float32"

    @classmethod
    def of(cls, inputs: ModelInputs, keep: int, dtype: torch.dtype) -> StepShape:
        return cls(batch=inputs.batch_size, cameras=int(inputs.visual_index.shape[0]),
                   prompt_tokens=int(inputs.input_ids.shape[1]), keep=keep, dtype=str(dtype).removeprefix("torch."))

    @property
    def name(self) -> str:
        return f"step_b{self.batch}_c{self.cameras}_p{self.prompt_tokens}_k{self.keep}_{self.dtype}"


def cache_root(checkpoint_dir: str | Path) -> tuple[Path, str]:
    """Where the exports of a checkpoint live, and why there.

    $VLA_ROS_ONNX_CACHE/<checkpoint id> when set; else <checkpoint>/onnx when the checkpoint directory is
    writable; else $XDG_CACHE_HOME (default ~/.cache)/vla_ros/onnx/<checkpoint id>.
    """
    checkpoint = Path(checkpoint_dir).resolve()
    ident = f"{checkpoint.name}-{hashlib.sha256(str(checkpoint).encode()).hexdigest()[:12]}"
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / ident, f"${CACHE_ENV}"
    beside = checkpoint / "onnx"
    if _writable(beside):
        return beside, "beside the checkpoint"
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return user_cache / "vla_ros" / "onnx" / ident, f"user cache ({checkpoint} is read-only)"


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
            return True
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


class StepCache:
    """Exported steps of one checkpoint on disk: <root>/<StepShape.name>/{model.onnx, meta.json}.

    An entry is used only if its meta.json records the current fingerprint (sha256 of config.json and
    model.safetensors, of the model code, library versions); otherwise it is rebuilt. Entries appear whole (exported into a
    temporary directory, then renamed), so a crash or a concurrent start never leaves a half-written one.
    """

    def __init__(self, checkpoint_dir: str | Path, root: Path | None = None) -> None:
        self.checkpoint_dir = Path(checkpoint_dir).resolve()
        self.root, self.location = (root, "given") if root is not None else cache_root(self.checkpoint_dir)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"ONNX export cache {self.root} ({self.location}) cannot be created: {err}") from err
        self._fingerprint: dict[str, object] | None = None

    @property
    def fingerprint(self) -> dict[str, object]:
        if self._fingerprint is None:
            self._fingerprint = {
                "config_sha256": file_sha256(self.checkpoint_dir / CONFIG_FILE),
                "weights_sha256": self._weights_sha256(), "model_code_sha256": _model_code_sha256(),
                "opset": OPSET, "torch": torch.__version__, "transformers": transformers.__version__,
                "onnx": _onnx_version()}
        return self._fingerprint

    def _weights_sha256(self) -> str:
        """Hashing 11 GB of paper-size weights takes a while: the digest is kept with the file's size and mtime."""
        weights = self.checkpoint_dir / WEIGHTS_FILE
        stat = weights.stat()
        memo_path = self.root / "weights_sha256.json"
        key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
        try:
            memo = json.loads(memo_path.read_text())
            if {k: memo.get(k) for k in key} == key:
                return str(memo["sha256"])
        except (OSError, ValueError, KeyError):
            pass
        digest = file_sha256(weights)
        _write_atomic(memo_path, json.dumps({**key, "sha256": digest}))
        return digest

    def path(self, shape: StepShape) -> Path:
        return self.root / shape.name / MODEL_FILE

    def lookup(self, shape: StepShape) -> Path | None:
        """The entry's model.onnx if it was exported from this checkpoint as it is now, else None."""
        entry = self.root / shape.name
        try:
            meta = json.loads((entry / META_FILE).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("fingerprint") != self.fingerprint or meta.get("shape") != dataclasses.asdict(shape):
            log.info("ONNX cache entry %s is stale (checkpoint or exporter changed): rebuilding", entry)
            return None
        return entry / MODEL_FILE if (entry / MODEL_FILE).is_file() else None

    def store(self, shape: StepShape, export: Callable[[Path], None]) -> Path:
        """Run export(path of a new model.onnx) in a temporary directory, then publish it as the entry."""
        entry = self.root / shape.name
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{shape.name}-"))
        staging.chmod(0o755)  # mkdtemp makes it private; the entry is an ordinary readable directory
        try:
            export(staging / MODEL_FILE)
            meta = {"fingerprint": self.fingerprint, "shape": dataclasses.asdict(shape),
                    "checkpoint": str(self.checkpoint_dir)}
            (staging / META_FILE).write_text(json.dumps(meta, indent=2))
            if entry.exists():
                shutil.rmtree(entry, ignore_errors=True)
            try:
                os.rename(staging, entry)
            except OSError:  # another process published the same entry first: theirs is as good
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return entry / MODEL_FILE


def _model_code_sha256() -> str:
    """The exported graph is whatever vla_ros/model's code traces: any edit there rebuilds the cache."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _onnx_version() -> str:
    import onnx

    return onnx.__version__


def session(path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
            threads: int | None = None) -> ort.InferenceSession:
    """An ORT session on the first available of `providers` (ConfigError if none of them is installed)."""
    usable = [p for p in providers if p in ort.get_available_providers()]
    if not usable:
        raise ConfigError(f"onnx providers={list(providers)}: none available; ONNX Runtime offers "
                          f"{ort.get_available_providers()}")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=usable)


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # tried in this order, then the CPU
CPU_PROVIDER = "CPUExecutionProvider"


def providers_for(device: str, engine_cache: Path | None = None) -> list[tuple[str, dict[str, object]]]:
    """ORT providers with options for a policy `device` (auto | cpu | cuda | cuda:N), best first.

    auto: TensorRT, CUDA, CPU, as installed; cuda: TensorRT and/or CUDA (plus the CPU for nodes they lack),
    ConfigError if neither is installed; cpu: the CPU only. TensorRT builds fp16 engines and keeps them in
    `engine_cache` (the first session of a shape builds its engine: minutes at paper size, then cached).
    """
    available = ort.get_available_providers()
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device={device!r}: must be auto, cpu, cuda or cuda:<index>")
    if device == "cpu":
        return [(CPU_PROVIDER, {})]
    device_id = int(device.split(":")[1]) if device.startswith("cuda:") else 0
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if device.startswith("cuda") and not gpu:
        raise ConfigError(f"device={device!r} with inference_backend=onnxruntime: this onnxruntime build offers "
                          f"{available}, neither TensorRT nor CUDA (install onnxruntime-gpu: docs/onnxruntime.md)")
    options: dict[str, dict[str, object]] = {
        "TensorrtExecutionProvider": {"device_id": device_id, "trt_fp16_enable": True,
                                      "trt_engine_cache_enable": engine_cache is not None,
                                      **({"trt_engine_cache_path": str(engine_cache)} if engine_cache else {})},
        "CUDAExecutionProvider": {"device_id": device_id}}
    return [(p, options[p]) for p in gpu] + [(CPU_PROVIDER, {})]


def provider_session(path: str | Path, providers: Sequence[tuple[str, dict[str, object]]],
                     threads: int | None = None) -> ort.InferenceSession:
    """A session on `providers` (ORT places each node on the first that runs it). ConfigError, with ORT's
    reason, if it cannot be built or if it silently dropped every requested GPU provider."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: constant-folding notes are noise here
    # Idle pool threads sleep instead of spinning: a policy shares its cores with the robot's other processes
    # (on the 2 shared cores here a spinning pool was up to 2x slower per chunk).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    names = [name for name, _ in providers]
    try:
        sess = ort.InferenceSession(str(path), sess_options=options, providers=names,
                                    provider_options=[opts for _, opts in providers])
    except Exception as err:  # ORT raises its own pybind exception types
        raise ConfigError(f"ONNX Runtime could not build a session for {path} on {names}: {err}") from err
    wanted_gpu = [n for n in names if n in GPU_PROVIDERS]
    if wanted_gpu and not set(wanted_gpu) & set(sess.get_providers()):
        raise ConfigError(f"ONNX Runtime dropped {wanted_gpu} for {path} (got {sess.get_providers()}): CUDA/TensorRT "
                          "libraries missing or mismatched; see docs/onnxruntime.md")
    return sess


def run_session(sess: ort.InferenceSession, pixels: torch.Tensor) -> list[np.ndarray]:
    """Host-memory run: pixels (any device) -> numpy outputs."""
    array = pixels.detach().cpu().numpy().astype(_NUMPY_DTYPES[pixels.dtype], copy=False)
    return sess.run(None, {INPUT_NAME: array})


class DeviceRunner:
    """Runs a CUDA-provider session on a torch CUDA tensor without host copies (I/O binding).

    Unmeasured here (no GPU when written): bench_gpu.py uses it where the CUDA provider exists.
    """

    def __init__(self, sess: ort.InferenceSession, pixels: torch.Tensor) -> None:
        self.sess = sess
        self.pixels = pixels.contiguous()
        self.binding = sess.io_binding()
        device_id = pixels.device.index or 0
        self.binding.bind_input(INPUT_NAME, "cuda", device_id, _NUMPY_DTYPES[pixels.dtype], tuple(self.pixels.shape),
                                self.pixels.data_ptr())
        for output in sess.get_outputs():
            self.binding.bind_output(output.name, "cuda", device_id)

    def __call__(self) -> None:
        self.binding.synchronize_inputs()
        self.sess.run_with_iobinding(self.binding)
        self.binding.synchronize_outputs()

    def outputs(self) -> list[np.ndarray]:
        return self.binding.copy_outputs_to_cpu()


@dataclasses.dataclass(frozen=True)
class Agreement:
    max_abs_error: float  # over all outputs
    max_rel_error: float  # max |onnx - torch| / max |torch|, worst output

    def within(self, rel_tolerance: float) -> bool:
        return self.max_rel_error <= rel_tolerance


def agreement(reference: torch.Tensor | Sequence[torch.Tensor], onnx_outputs: Sequence[np.ndarray]) -> Agreement:
    """Compare torch outputs with ONNX Runtime's, output by output (shapes must match)."""
    references = [reference] if isinstance(reference, torch.Tensor) else list(reference)
    if len(references) != len(onnx_outputs):
        raise ConfigError(f"onnx outputs: got {len(onnx_outputs)}, torch gave {len(references)}")
    abs_errors, rel_errors = [], []
    for ref, out in zip(references, onnx_outputs):
        ref_np = ref.detach().float().cpu().numpy()
        if ref_np.shape != out.shape:
            raise ConfigError(f"onnx output shape {out.shape} != torch {ref_np.shape}")
        error = float(np.abs(out.astype(np.float32) - ref_np).max())
        abs_errors.append(error)
        rel_errors.append(error / max(float(np.abs(ref_np).max()), 1e-12))
    return Agreement(max(abs_errors), max(rel_errors))
