"""DeepVision-VLA configuration: one typed, frozen, validated tree saved as the checkpoint's config.json.

Every choice the paper leaves open (deepvision_vla.md §6) is a field here with the documented default.
Labels in the descriptions: [S] the paper states it, [I] our choice (deepvision_vla.md §5). The
model architecture is owned by the checkpoint; only pruning.keep_ratio changes at run time.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from vla_ros.config.sim import SIM_JOINT_NAMES
from vla_ros.config.schema import param, section
from vla_ros.errors import ConfigError
from vla_ros.types import ACTION_SPACES, PolicySpec

CONFIG_VERSION = 1
DEFAULT_JOINTS = SIM_JOINT_NAMES  # one source: the embedded simulated arm's joints (config/sim.py)
EXPERT_POSITION_MODES = ("mrope_grid", "fixed", "none")
COUPLED_LLM_LAYERS = ("deep", "shallow")
ALIGNER_NORM_POSITIONS = ("after", "before")
EXPERT_OUTPUT_MODES = ("back_projection", "replace_o_proj")
SALIENCY_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
RESIZE_MODES = ("bicubic", "bilinear")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _fail(field: str, value: Any, rule: str) -> None:
    raise ConfigError(f"{field}={value!r}: {rule}")


def _check_size(field: str, size: tuple[int, int], multiple: int = 1) -> None:
    if len(size) != 2 or any(not isinstance(v, int) or v <= 0 or v % multiple for v in size):
        _fail(field, size, f"must be (height, width) of positive ints divisible by {multiple}")


def _check_unique_names(field: str, names: tuple[str, ...]) -> None:
    if not names or len(set(names)) != len(names) or any(not isinstance(n, str) or not n for n in names):
        _fail(field, names, "must be a non-empty tuple of unique non-empty strings")


def _check_choice(field: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(field, value, f"must be one of {choices}")


@dataclasses.dataclass(frozen=True)
class RobotConfig:
    """The robot interface the checkpoint was trained for (becomes the PolicySpec)."""

    robot_type: str = param("sim_arm", "robot_type of the dataset(s) the checkpoint was trained on "
                            "(LeRobot meta/info.json); policy_node refuses a checkpoint whose robot_type "
                            "differs from its own")
    joint_names: tuple[str, ...] = param(DEFAULT_JOINTS, "Joints in the state vector's order (S = J)")
    action_names: tuple[str, ...] = param(DEFAULT_JOINTS, "One name per action dimension (A)")
    action_space: str = param("joint_position", "joint_position: absolute targets [rad; gripper units]; "
                              "joint_delta: offsets the safety layer adds", choices=ACTION_SPACES)
    dt_s: float = param(0.1, "Time between consecutive actions of a chunk [s]", range=(1e-4, 10.0))
    camera_names: tuple[str, ...] = param(("front",), "One image per camera, in this order")
    camera_image_size_px: tuple[int, int] = param((240, 320), "(height, width) of every frame given to "
                                                  "predict() [px]; resized inside to both model resolutions")
    chunk_size: int = param(16, "H actions per chunk [I: StarVLA default; DV silent]", range=(1, 1024))
    state_dim: int = param(7, "S, must equal len(joint_names)", range=(1, 1024))
    use_proprio: bool = param(False, "Insert one OFT-style state token before the actions [I: DV v2 silent]")

    def __post_init__(self) -> None:
        _check_unique_names("robot.joint_names", self.joint_names)
        _check_unique_names("robot.action_names", self.action_names)
        _check_unique_names("robot.camera_names", self.camera_names)
        _check_choice("robot.action_space", self.action_space, ACTION_SPACES)
        if not self.dt_s > 0:
            _fail("robot.dt_s", self.dt_s, "must be > 0 seconds")
        _check_size("robot.camera_image_size_px", self.camera_image_size_px)
        if self.chunk_size < 1:
            _fail("robot.chunk_size", self.chunk_size, "must be >= 1")
        if self.state_dim != len(self.joint_names):
            _fail("robot.state_dim", self.state_dim, f"must equal len(joint_names) = {len(self.joint_names)}")

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def policy_spec(self) -> PolicySpec:
        """What a policy for this robot expects and produces (policy_node checks it against its config)."""
        return PolicySpec(joint_names=self.joint_names, action_names=self.action_names,
                          action_space=self.action_space, horizon=self.chunk_size, dt_s=self.dt_s,
                          camera_names=self.camera_names, image_size_px=self.camera_image_size_px,
                          robot_type=self.robot_type)


@dataclasses.dataclass(frozen=True)
class PromptConfig:
    """How the instruction becomes tokens. The exact DV prompt is unknown (deepvision_vla.md §6.5)."""

    template: str = param("<|im_start|>user\n{images}{instruction}<|im_end|>\n<|im_start|>assistant\n",
                          "Qwen chat layout [I]; {images} becomes one <|vision_start|><|image_pad|>*Nv"
                          "<|vision_end|> block per camera")
    instruction_token_buckets: tuple[int, ...] = param(
        (32, 64, 128), "Instruction tokens are padded to the smallest bucket that fits, so shapes stay "
        "static per bucket (CUDA graphs); longer instructions are refused")
    require_instruction: bool = param(True, "An empty instruction is an ObservationError")

    def __post_init__(self) -> None:
        t = self.template
        if t.count("{images}") != 1 or t.count("{instruction}") != 1 or t.index("{images}") > t.index("{instruction}"):
            _fail("prompt.template", t, "must contain '{images}' once, then '{instruction}' once")
        b = self.instruction_token_buckets
        if not b or any(v < 1 for v in b) or list(b) != sorted(set(b)):
            _fail("prompt.instruction_token_buckets", b, "must be strictly increasing positive ints")


@dataclasses.dataclass(frozen=True)
class QwenTextConfig:
    """Qwen3-VL language model dims (HF `text_config`). Defaults: Qwen3-VL-4B-Instruct [S Q3VL-cfg]."""

    vocab_size: int = param(151936, "Token embedding rows")
    hidden_size: int = param(2560, "C, LLM width")
    num_layers: int = param(36, "LLM decoder layers [S DV Fig. 2]")
    num_heads: int = param(32, "Hq, query heads")
    num_kv_heads: int = param(8, "Hkv, key/value heads (grouped-query attention)")
    head_dim: int = param(128, "D")
    intermediate_size: int = param(9728, "SwiGLU MLP width")
    rms_norm_eps: float = param(1e-6, "RMSNorm epsilon")
    rope_theta: float = param(5_000_000.0, "RoPE base")
    mrope_section: tuple[int, int, int] = param((24, 20, 20), "Interleaved MRoPE split (t, h, w) of head_dim/2")
    max_position_embeddings: int = param(262144, "RoPE context length")
    hidden_act: str = param("silu", "MLP activation")

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            _fail("vlm.text.num_kv_heads", self.num_kv_heads, f"must divide num_heads={self.num_heads}")
        if sum(self.mrope_section) * 2 != self.head_dim:
            _fail("vlm.text.mrope_section", self.mrope_section, f"must sum to head_dim/2 = {self.head_dim // 2}")


@dataclasses.dataclass(frozen=True)
class QwenVisionConfig:
    """Qwen3-VL vision tower dims (HF `vision_config`). Defaults: Qwen3-VL-4B [S Q3VL-cfg]."""

    depth: int = param(24, "Vision transformer blocks")
    hidden_size: int = param(1024, "Vision width")
    num_heads: int = param(16, "Vision attention heads")
    intermediate_size: int = param(4096, "Vision MLP width")
    patch_size: int = param(16, "Patch side [px]")
    temporal_patch_size: int = param(2, "Frames per patch; a still image is repeated")
    spatial_merge_size: int = param(2, "2x2 patches merge into one LLM token")
    num_position_embeddings: int = param(2304, "Learned position grid (a square number), interpolated")
    deepstack_visual_indexes: tuple[int, ...] = param((5, 11, 17), "Vision blocks whose features are added "
                                                      "to LLM layers 0, 1, 2 (DeepStack)")
    hidden_act: str = param("gelu_pytorch_tanh", "Vision MLP activation")

    def __post_init__(self) -> None:
        if any(not 0 <= i < self.depth for i in self.deepstack_visual_indexes):
            _fail("vlm.vision.deepstack_visual_indexes", self.deepstack_visual_indexes, f"must be in [0, {self.depth})")
        if int(self.num_position_embeddings**0.5) ** 2 != self.num_position_embeddings:
            _fail("vlm.vision.num_position_embeddings", self.num_position_embeddings, "must be a square number")


@dataclasses.dataclass(frozen=True)
class SpecialTokenIds:
    """Token ids the prompt needs; checked against the tokenizer at load time. Defaults: Qwen3-VL."""

    pad: int = param(151643, "<|endoftext|>, also the instruction padding")
    im_start: int = param(151644, "<|im_start|>")
    im_end: int = param(151645, "<|im_end|>")
    image: int = param(151655, "<|image_pad|>, replaced by visual tokens")
    video: int = param(151656, "<|video_pad|>, unused but part of the HF config")
    vision_start: int = param(151652, "<|vision_start|>")
    vision_end: int = param(151653, "<|vision_end|>")


@dataclasses.dataclass(frozen=True)
class VLMConfig:
    base_weights_dir: str | None = param(None, "Local Hugging Face Qwen3-VL directory for "
                                         "DeepVisionVLA.from_base_weights; None: random init (tests, bench)")
    image_size_px: tuple[int, int] = param((256, 256), "VLA branch resolution (height, width) [px] [S DV §4.1]")
    resize_mode: str = param("bicubic", "Resampling to image_size_px (Qwen's processor uses bicubic)",
                             choices=RESIZE_MODES)
    image_mean: tuple[float, float, float] = param((0.5, 0.5, 0.5), "Per-channel mean (Qwen3-VL processor)")
    image_std: tuple[float, float, float] = param((0.5, 0.5, 0.5), "Per-channel std (Qwen3-VL processor)")
    text: QwenTextConfig = section(QwenTextConfig)
    vision: QwenVisionConfig = section(QwenVisionConfig)
    tokens: SpecialTokenIds = section(SpecialTokenIds)

    def __post_init__(self) -> None:
        _check_size("vlm.image_size_px", self.image_size_px, self.vision.patch_size * self.vision.spatial_merge_size)
        _check_choice("vlm.resize_mode", self.resize_mode, RESIZE_MODES)
        if len(self.vision.deepstack_visual_indexes) > self.text.num_layers:
            _fail("vlm.vision.deepstack_visual_indexes", self.vision.deepstack_visual_indexes,
                  f"at most text.num_layers={self.text.num_layers} entries")

    @property
    def token_grid(self) -> tuple[int, int]:
        """(gh, gw) of VLA visual tokens after the 2x2 merge."""
        unit = self.vision.patch_size * self.vision.spatial_merge_size
        return self.image_size_px[0] // unit, self.image_size_px[1] // unit


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """DINOv3 vision expert. Defaults: ViT-H+/16 [S D3-hub] at 512x512 [S DV §4.1]."""

    base_weights_dir: str | None = param(None, "Local Hugging Face DINOv3 directory; None: random init")
    image_size_px: tuple[int, int] = param((512, 512), "Expert resolution (height, width) [px] [S DV §4.1]")
    resize_mode: str = param("bicubic", "Resampling to image_size_px", choices=RESIZE_MODES)
    image_mean: tuple[float, float, float] = param(IMAGENET_MEAN, "Per-channel mean (DINOv3 processor)")
    image_std: tuple[float, float, float] = param(IMAGENET_STD, "Per-channel std (DINOv3 processor)")
    use_rope_augmentation: bool = param(False, "HF DINOv3 rescales its RoPE coordinates at random in train(); "
                                        "off so training and inference see the same positions [I §5.5.2]")
    hidden_size: int = param(1280, "C_e, expert width")
    num_layers: int = param(32, "Expert transformer layers")
    num_heads: int = param(20, "Expert attention heads")
    intermediate_size: int = param(5120, "Expert MLP width")
    patch_size: int = param(16, "Patch side [px]")
    num_register_tokens: int = param(4, "Register tokens after CLS")
    use_gated_mlp: bool = param(True, "SwiGLU MLP (ViT-H+)")
    hidden_act: str = param("silu", "Expert MLP activation")
    layerscale_value: float = param(1e-5, "LayerScale init; pretrained weights override it")
    layer_norm_eps: float = param(1e-5, "LayerNorm epsilon")
    rope_theta: float = param(100.0, "Expert 2-D RoPE base")

    def __post_init__(self) -> None:
        _check_size("expert.image_size_px", self.image_size_px, self.patch_size)
        _check_choice("expert.resize_mode", self.resize_mode, RESIZE_MODES)
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            _fail("expert.num_heads", self.num_heads, f"hidden_size={self.hidden_size} / heads must be a multiple of 4")

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(Pe_h, Pe_w) of expert patch tokens."""
        return self.image_size_px[0] // self.patch_size, self.image_size_px[1] // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_register_tokens  # CLS + registers


@dataclasses.dataclass(frozen=True)
class CouplingConfig:
    """VL-MoT: the last `num_layers` expert layers share attention with the last `num_layers` LLM layers."""

    num_layers: int = param(16, "n coupled pairs: the last n expert layers with the last n LLM layers "
                            "[S DV §4.1]; 0 = QwenVLA-OFT baseline (expert must then be None)")
    llm_layers: str = param("deep", "Which n LLM layers the expert joins: deep = the last n (the paper); shallow = "
                            "the first n (the ablation of §3.2's claim; no LLM layer precedes them, so no AGVP: "
                            "pruning.keep_ratio must be 1.0)", choices=COUPLED_LLM_LAYERS)
    expert_positions: str = param("mrope_grid", "RoPE of expert tokens in the shared attention "
                                  "(deepvision_vla.md §5.4): mrope_grid = the image position under each patch "
                                  "[I, recommended]; fixed = the image start; none = no rotation",
                                  choices=EXPERT_POSITION_MODES)
    aligner_norm_position: str = param("after", "Aligner order: Linear then LayerNorm (after) as Fig. 3b "
                                       "lists them, or LayerNorm first [I]", choices=ALIGNER_NORM_POSITIONS)
    share_aligners: bool = param(False, "One aligner set for all pairs instead of one per pair [I]")
    expert_output: str = param("back_projection", "Expert attention output to C_e: a new Linear(Hq*D -> C_e) "
                               "before DINO's o_proj (back_projection) or instead of it (replace_o_proj) [I §5.1]",
                               choices=EXPERT_OUTPUT_MODES)
    keep_prefix_tokens: bool = param(False, "Keep DINO's CLS and register tokens beside the kept patches "
                                     "[I §6.3]")

    def __post_init__(self) -> None:
        if self.num_layers < 0:
            _fail("coupling.num_layers", self.num_layers, "must be >= 0")
        _check_choice("coupling.llm_layers", self.llm_layers, COUPLED_LLM_LAYERS)
        _check_choice("coupling.expert_positions", self.expert_positions, EXPERT_POSITION_MODES)
        _check_choice("coupling.aligner_norm_position", self.aligner_norm_position, ALIGNER_NORM_POSITIONS)
        _check_choice("coupling.expert_output", self.expert_output, EXPERT_OUTPUT_MODES)


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """AGVP: action-guided visual pruning of expert patches (DV §3.3.3)."""

    keep_ratio: float = param(0.5, "Fraction of expert patches kept, K = round(ratio * P) [S DV §4.1]; the "
                              "run-time value is set with set_keep_ratio", range=(1e-6, 1.0), dynamic=True)
    # DV says "layers 4-19" without an index base; read 0-indexed: the 16 layers before the coupled block [I §6.4].
    saliency_layers: tuple[int, ...] = param(tuple(range(4, 20)), "Shallow LLM layers (0-indexed) whose "
                                             "action-to-vision attention is averaged")
    interpolation: str = param("bilinear", "VLA token grid -> expert patch grid [I]",
                               choices=SALIENCY_INTERPOLATIONS)
    renormalize: bool = param(False, "Divide each layer's map by its mass on the visual tokens [I: no]")

    def __post_init__(self) -> None:
        check_keep_ratio(self.keep_ratio, "pruning.keep_ratio")
        s = self.saliency_layers
        if not s or list(s) != sorted(set(s)) or s[0] < 0:
            _fail("pruning.saliency_layers", s, "must be strictly increasing non-negative layer indices")
        _check_choice("pruning.interpolation", self.interpolation, SALIENCY_INTERPOLATIONS)


def check_keep_ratio(keep_ratio: float, field: str = "keep_ratio") -> float:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 < keep_ratio <= 1.0:
        _fail(field, keep_ratio, "must be a number in (0, 1]")
    return float(keep_ratio)


HEAD_NAMES = ("oft_mlp", "vla_adapter", "vlm4vla")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Action decoder; `name` selects from model.heads.HEADS (deepvision_vla.md §1.2, §2.3, §3.1)."""

    name: str = param("oft_mlp", "oft_mlp: H zero action tokens through the VLM, a two-layer MLP per action "
                      "token, L1 [S DV §3.3.1]; vla_adapter: learnable ActionQuery tokens and a Bridge-Attention "
                      "policy over every layer's raw and ActionQuery hidden states [S VLA-Adapter]; vlm4vla: "
                      "learnable query token(s) and an MLP on their last hidden state [S VLM4VLA]",
                      choices=HEAD_NAMES)
    hidden_dim: int | None = param(None, "MLP width (oft_mlp, vlm4vla); None = LLM width [I]")
    activation: str = param("gelu", "MLP activation [I]")
    num_query_tokens: int = param(0, "Learnable query tokens appended to the VLM input; 0 = the head's default "
                                  "(vla_adapter 64 [S VA], vlm4vla 1 [S V4]); oft_mlp uses H zero tokens",
                                  range=(0, 4096))
    bridge_layers: tuple[int, ...] = param((), "vla_adapter: LLM layers (0-indexed) whose hidden states the "
                                           "policy reads, one Bridge-Attention block each; () = all [S VA]")
    bridge_num_heads: int = param(8, "vla_adapter: attention heads of each Bridge-Attention block [S VA-code]",
                                  range=(1, 256))

    def __post_init__(self) -> None:
        _check_choice("head.name", self.name, HEAD_NAMES)
        if self.num_query_tokens < 0:
            _fail("head.num_query_tokens", self.num_query_tokens, "must be >= 0")
        if self.name == "oft_mlp" and self.num_query_tokens:
            _fail("head.num_query_tokens", self.num_query_tokens, "oft_mlp uses the H action tokens; leave it 0")
        b = self.bridge_layers
        if b and (list(b) != sorted(set(b)) or b[0] < 0):
            _fail("head.bridge_layers", b, "must be strictly increasing non-negative layer indices")
        if self.bridge_num_heads < 1:
            _fail("head.bridge_num_heads", self.bridge_num_heads, "must be >= 1")


@dataclasses.dataclass(frozen=True)
class DeepVisionConfig:
    """The whole model: robot interface, prompt, Qwen3-VL, DINOv3 expert, coupling, AGVP and action head."""

    robot: RobotConfig = section(RobotConfig)
    prompt: PromptConfig = section(PromptConfig)
    vlm: VLMConfig = section(VLMConfig)
    expert: ExpertConfig | None = section(ExpertConfig)  # None = QwenVLA-OFT baseline
    coupling: CouplingConfig = section(CouplingConfig)
    pruning: PruningConfig = section(PruningConfig)
    head: HeadConfig = section(HeadConfig)
    config_version: int = param(CONFIG_VERSION, "Layout version of config.json")

    def __post_init__(self) -> None:
        if self.config_version != CONFIG_VERSION:
            _fail("config_version", self.config_version, f"this code reads version {CONFIG_VERSION}")
        n, text = self.coupling.num_layers, self.vlm.text
        if self.head.bridge_layers and self.head.bridge_layers[-1] >= text.num_layers:
            _fail("head.bridge_layers", self.head.bridge_layers, f"must be < vlm.text.num_layers={text.num_layers}")
        if self.head.name == "vla_adapter" and text.hidden_size % self.head.bridge_num_heads:
            _fail("head.bridge_num_heads", self.head.bridge_num_heads,
                  f"must divide the LLM width vlm.text.hidden_size={text.hidden_size}")
        if (self.expert is None) != (n == 0):
            _fail("coupling.num_layers", n, "must be 0 exactly when expert is None (the baseline)")
        if self.expert is None:
            return
        if n > text.num_layers or n > self.expert.num_layers:
            _fail("coupling.num_layers", n,
                  f"must be <= vlm.text.num_layers={text.num_layers} and expert.num_layers={self.expert.num_layers}")
        if self.coupling.llm_layers == "shallow":
            if self.pruning.keep_ratio != 1.0:
                _fail("pruning.keep_ratio", self.pruning.keep_ratio, "must be 1.0 with coupling.llm_layers=shallow "
                      "(AGVP reads LLM layers before the coupled ones, and none precede the first layer)")
            return
        first_coupled = text.num_layers - n
        if self.pruning.saliency_layers[-1] >= first_coupled:
            _fail("pruning.saliency_layers", self.pruning.saliency_layers,
                  f"must precede the first coupled LLM layer {first_coupled}")

    @property
    def uses_expert(self) -> bool:
        return self.expert is not None

    @property
    def coupled_llm_layers(self) -> range:
        """Indices of the LLM layers the expert joins (the last n, or the first n when llm_layers=shallow)."""
        n, total = self.coupling.num_layers, self.vlm.text.num_layers
        return range(0, n) if self.coupling.llm_layers == "shallow" else range(total - n, total)

    @property
    def uses_agvp(self) -> bool:
        """AGVP needs LLM layers before the coupled block to read the action-to-vision attention from."""
        return self.expert is not None and self.coupling.llm_layers == "deep"

    @classmethod
    def paper(cls, vlm_dir: str | None = None, expert_dir: str | None = None, baseline: bool = False,
              robot: RobotConfig | None = None) -> DeepVisionConfig:
        """Qwen3-VL-4B + DINOv3 ViT-H+/16 @ 512 px, 256 px VLA image, 16 coupled layers (deepvision_vla.md §5)."""
        return cls(
            robot=robot or RobotConfig(),
            vlm=VLMConfig(base_weights_dir=vlm_dir),
            expert=None if baseline else ExpertConfig(base_weights_dir=expert_dir),
            coupling=CouplingConfig(num_layers=0 if baseline else 16),
        )

    @classmethod
    def tiny(cls, baseline: bool = False, robot: RobotConfig | None = None) -> DeepVisionConfig:
        """CPU-sized model for tests and the demo (deepvision_vla.md §5.8); runs in milliseconds."""
        return cls(
            robot=robot or RobotConfig(),
            prompt=PromptConfig(instruction_token_buckets=(32, 64)),
            vlm=VLMConfig(
                image_size_px=(64, 64),
                text=QwenTextConfig(vocab_size=264, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2,
                                    head_dim=16, intermediate_size=128, rope_theta=10000.0, mrope_section=(4, 2, 2),
                                    max_position_embeddings=4096),
                vision=QwenVisionConfig(depth=2, hidden_size=32, num_heads=2, intermediate_size=64,
                                        num_position_embeddings=16, deepstack_visual_indexes=(0,)),
                # ids of the byte-level tiny tokenizer (processing.build_byte_tokenizer)
                tokens=SpecialTokenIds(pad=256, im_start=257, im_end=258, vision_start=259, vision_end=260,
                                       image=261, video=262),
            ),
            expert=None if baseline else ExpertConfig(
                image_size_px=(128, 128), hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64,
                layerscale_value=1.0),
            coupling=CouplingConfig(num_layers=0 if baseline else 2),
            pruning=PruningConfig(saliency_layers=(0, 1)),
        )

    # ---- JSON (config.json of a checkpoint) ----

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeepVisionConfig:
        return _from_dict(cls, data, "")

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> DeepVisionConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _from_dict(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        _fail(path or "<root>", data, f"must be a mapping for {cls.__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        _fail(f"{path}{unknown[0]}", data[unknown[0]], f"unknown key; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{path}{name}") for name, value in data.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any, path: str) -> Any:
    """JSON value -> field value: nested dataclasses rebuilt, lists turned back into tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, f"{path}.")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(path, value, "must be a list")
        return tuple(value)
    return value
