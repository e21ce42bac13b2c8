"""OnnxPolicy: the vla_ros.types.Policy that runs the whole DeepVision-VLA step on ONNX Runtime.

Preprocessing and unnormalisation are the torch policy's (DeepVisionProcessor); the step between them is one
ONNX Runtime session per (batch, cameras, instruction bucket, K), exported from the checkpoint on first need and
cached on disk (onnx_export.StepCache). With every needed shape cached, start-up reads no torch weights at all:
config, tokenizer, norm stats and the ONNX files. A shape that is not cached loads the torch model once (kept for
later exports), exports, checks the session against the torch forward on the export's example and only then
serves it; any failure there is a ConfigError naming the reason, never a silent switch to torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from vla_ros.errors import ConfigError
from vla_ros.model import onnx_export
from vla_ros.model.checkpoint import load_checkpoint, load_processor
from vla_ros.model.configuration import check_keep_ratio
from vla_ros.model.modeling_deepvision import DeepVisionVLA
from vla_ros.model.processing import ModelInputs
from vla_ros.model.pruning import kept_patches_per_camera
from vla_ros.types import Observation, PolicyOutput, PolicySpec

log = logging.getLogger(__name__)
MAX_SESSIONS = 8  # sessions kept (instruction bucket x K x batch); the oldest is dropped
EXPORT_DTYPE = torch.float32  # TensorRT builds its fp16 engines from the fp32 graph
# Export-time check of a fresh session against the torch forward on the example (fp32 on both sides; the
# tests hold the tighter 1e-4 on other inputs). Bigger than this means the graph is wrong, not rounding.
EXPORT_CHECK_REL_TOLERANCE = 1e-3


class OnnxPolicy:
    """Runs a DeepVision-VLA checkpoint through ONNX Runtime (providers from onnx_export.providers_for)."""

    backend = "onnxruntime"

    def __init__(self, checkpoint_dir: str | Path, device: str = "auto", keep_ratio: float | None = None,
                 threads: int | None = None, cache_root: Path | None = None) -> None:
        """Builds the session of the smallest instruction bucket at batch 1 now (so a broken export or provider
        refuses start-up); other shapes on their first call."""
        self.checkpoint_dir = Path(checkpoint_dir).resolve()
        self.processor = load_processor(self.checkpoint_dir)
        self.config = self.processor.config
        self.cache = onnx_export.StepCache(self.checkpoint_dir, cache_root)
        self.providers = onnx_export.providers_for(device, engine_cache=self.cache.root / "tensorrt")
        self.threads = threads
        self._keep_ratio = check_keep_ratio(self.config.pruning.keep_ratio if keep_ratio is None else keep_ratio)
        self._sessions: OrderedDict[onnx_export.StepShape, ort.InferenceSession] = OrderedDict()
        self._lock = threading.Lock()  # sessions and the lazily loaded torch model
        self._model: DeepVisionVLA | None = None
        self.exported: list[str] = []  # shapes exported by this instance (the rest came from the cache)
        robot = self.config.robot
        self._spec = robot.policy_spec()
        first = self._session(self._example(self.config.prompt.instruction_token_buckets[0]), self._keep_ratio)
        self.provider = first.get_providers()[0]
        log.info("ONNX Runtime session on %s (providers %s), exports %s (%s)", self.provider, first.get_providers(),
                 self.cache.root, self.cache.location)

    @property
    def spec(self) -> PolicySpec:
        return self._spec

    @property
    def keep_ratio(self) -> float:
        return self._keep_ratio

    @property
    def trained_keep_ratio(self) -> float:
        """The checkpoint's own AGVP ratio (pruning.keep_ratio): what policy_node serves at keep_ratio 0."""
        return self.config.pruning.keep_ratio

    def set_keep_ratio(self, keep_ratio: float) -> None:
        """Validated (ConfigError outside (0, 1]); applies from the next predict, whose K may need an export."""
        self._keep_ratio = check_keep_ratio(keep_ratio)

    def kept_patches_per_camera(self, keep_ratio: float | None = None) -> int:
        return kept_patches_per_camera(self.config, self._keep_ratio if keep_ratio is None else keep_ratio)

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend, "provider": self.provider, "providers": [p for p, _ in self.providers],
                "onnx_cache": str(self.cache.root), "onnx_cache_location": self.cache.location}

    def predict(self, obs: Observation) -> PolicyOutput:
        return self.predict_batch([obs])[0]

    def predict_batch(self, observations: Sequence[Observation]) -> list[PolicyOutput]:
        """Several observations in one run; `info["inference_s"]` is the whole batch's time."""
        keep_ratio = self._keep_ratio
        start_s = time.perf_counter()
        inputs = self.processor.observations_to_inputs(observations, "cpu")
        outputs = self._run(inputs, keep_ratio)
        chunks = self.processor.actions_to_physical(torch.from_numpy(outputs[0]))
        inference_s = time.perf_counter() - start_s
        kept = self.kept_patches_per_camera(keep_ratio) * len(self._spec.camera_names)
        return [PolicyOutput(actions=chunk, kept_expert_tokens=kept,
                             info={"inference_s": inference_s, "keep_ratio": keep_ratio, "backend": self.backend,
                                   "provider": self.provider})
                for chunk in chunks]

    def kept_patch_indices(self, obs: Observation) -> np.ndarray:
        """(C, K) raster indices AGVP keeps for `obs` (computed inside the graph); (C, 0) for the baseline."""
        outputs = self._run(self.processor.observations_to_inputs([obs], "cpu"), self._keep_ratio)
        if len(outputs) < 2:
            return np.zeros((len(self._spec.camera_names), 0), dtype=np.int64)
        return outputs[1][0]

    # ---- sessions ----

    def _run(self, inputs: ModelInputs, keep_ratio: float) -> list[np.ndarray]:
        sess = self._session(inputs, keep_ratio)
        return sess.run(None, onnx_export.step_feed(inputs, np.float32))

    def _shape(self, inputs: ModelInputs, keep_ratio: float) -> onnx_export.StepShape:
        return onnx_export.StepShape.of(inputs, self.kept_patches_per_camera(keep_ratio), EXPORT_DTYPE)

    def _session(self, inputs: ModelInputs, keep_ratio: float) -> ort.InferenceSession:
        shape = self._shape(inputs, keep_ratio)
        with self._lock:
            sess = self._sessions.get(shape)
            if sess is None:
                sess = self._open(shape, inputs, keep_ratio)
                if len(self._sessions) >= MAX_SESSIONS:
                    self._sessions.popitem(last=False)
                self._sessions[shape] = sess
            self._sessions.move_to_end(shape)
            return sess

    def _open(self, shape: onnx_export.StepShape, inputs: ModelInputs, keep_ratio: float) -> ort.InferenceSession:
        path = self.cache.lookup(shape)
        if path is not None:
            try:
                return onnx_export.provider_session(path, self.providers, self.threads)
            except ConfigError as err:  # a damaged cache entry: export it again (a second failure is raised)
                log.warning("cached export %s did not load (%s): exporting it again", path, err)
        return self._export(shape, inputs, keep_ratio)

    def _export(self, shape: onnx_export.StepShape, inputs: ModelInputs, keep_ratio: float) -> ort.InferenceSession:
        t0 = time.perf_counter()
        log.info("exporting the whole step for %s to ONNX (once per checkpoint and shape) ...", shape.name)
        model = self._torch_model()
        step = onnx_export.PolicyStep(model, inputs, keep_ratio).eval()
        try:
            path = self.cache.store(shape, lambda p: onnx_export.export_step(step, inputs, p))
        except Exception as err:  # the exporter raises many types; the node must name the reason and stop
            raise ConfigError(f"ONNX export of {shape.name} from {self.checkpoint_dir} failed: "
                              f"{type(err).__name__}: {err}") from err
        sess = onnx_export.provider_session(path, self.providers, self.threads)
        self._check(sess, step, inputs, path)
        self.exported.append(shape.name)
        log.info("exported %s in %.1f s", path, time.perf_counter() - t0)
        return sess

    def _check(self, sess: ort.InferenceSession, step: onnx_export.PolicyStep, inputs: ModelInputs,
               path: Path) -> None:
        with torch.inference_mode():
            reference = step(*onnx_export.step_tensors(inputs, EXPORT_DTYPE))
        outputs = sess.run(None, onnx_export.step_feed(inputs, np.float32))
        agreement = onnx_export.agreement(reference[0], outputs[:1])
        if not agreement.within(EXPORT_CHECK_REL_TOLERANCE):
            raise ConfigError(f"{path}: ONNX Runtime ({sess.get_providers()[0]}) disagrees with the torch forward "
                              f"(max relative error {agreement.max_rel_error:.2e} > "
                              f"{EXPORT_CHECK_REL_TOLERANCE:.0e}); refusing to serve it")

    def _torch_model(self) -> DeepVisionVLA:
        if self._model is None:
            self._model = load_checkpoint(self.checkpoint_dir, device="cpu", dtype=EXPORT_DTYPE).model
        return self._model

    def _example(self, bucket: int, batch: int = 1) -> ModelInputs:
        """Inputs with the shapes of `bucket` (values only feed the export's trace and check)."""
        robot = self.config.robot
        rng = np.random.default_rng(0)
        obs = Observation(images=tuple(rng.integers(0, 256, (*robot.camera_image_size_px, 3), dtype=np.uint8)
                                       for _ in robot.camera_names),
                          state=np.zeros(robot.state_dim), instruction="a", stamp_ns=0)
        inputs = self.processor.observations_to_inputs([obs] * batch, "cpu")
        length = self.processor.fixed_prompt_tokens + bucket
        pad = length - inputs.input_ids.shape[1]  # the shortest instruction lands in the smallest bucket
        inputs.input_ids = torch.nn.functional.pad(inputs.input_ids, (0, pad), value=self.config.vlm.tokens.pad)
        inputs.prompt_valid = torch.nn.functional.pad(inputs.prompt_valid, (0, pad), value=False)
        return inputs
