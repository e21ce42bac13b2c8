"""policy_node parameters."""

from __future__ import annotations

import dataclasses

from vla_ros.config.sim import SIM_JOINT_NAMES
from vla_ros.config.schema import param
from vla_ros.errors import ConfigError

DEFAULT_JOINTS = SIM_JOINT_NAMES  # one source: the embedded simulated arm's joints (config/sim.py)
MIN_KEEP_RATIO = 0.05  # below this AGVP keeps ~1 patch of a 16x16 grid


@dataclasses.dataclass(frozen=True)
class PolicyNodeConfig:
    checkpoint_dir: str = param(
        "", "Checkpoint directory (config.json, model.safetensors, norm_stats.json, tokenizer). "
            "Empty: the trained default shipped in the package's models/ folder, made for the simulated "
            "arm (robot_type sim_arm): any other robot_type must name its checkpoint.")
    robot_type: str = param(
        "sim_arm", "The robot this node drives (the recorder's robot_type). A checkpoint trained on "
                   "another robot_type (its config.json robot.robot_type, from the dataset) is refused.")
    device: str = param("auto", "Where the policy runs; auto picks cuda when available.",
                        choices=("auto", "cpu", "cuda"))
    fast_inference: str = param(
        "auto", "Serve the model through its static forward (fixed shapes, preallocated buffers, one CUDA "
                "graph per input shape on CUDA; falls back to eager, logged, if building it fails). "
                "auto: on for cuda, off for cpu; on; off: always the eager forward.",
        choices=("auto", "on", "off"))
    inference_backend: str = param(
        "torch", "What runs the model: torch (eager, or the static forward of fast_inference) or onnxruntime (the "
                 "whole step exported to ONNX once per checkpoint and input shape, cached beside the checkpoint or, "
                 "if that is read-only, in ~/.cache/vla_ros/onnx; providers TensorRT -> CUDA -> CPU as installed "
                 "and allowed by device; fast_inference does not apply). A session that cannot be built stops "
                 "the node with the reason. docs/onnxruntime.md",
        choices=("torch", "onnxruntime"))
    joint_names: tuple[str, ...] = param(DEFAULT_JOINTS, "Robot joints in the policy's state order; "
                                         "matched by name in /joint_states.")
    camera_topics: tuple[str, ...] = param(("/camera/image_raw",), "One topic per policy camera, in the "
                                           "policy's camera order; a topic ending in /compressed is read "
                                           "as sensor_msgs/CompressedImage.")
    image_height_px: int = param(240, "Height of the camera images the robot publishes.", range=(16, 4096))
    image_width_px: int = param(320, "Width of the camera images the robot publishes.", range=(16, 4096))
    resize_mismatched_images: bool = param(
        True, "An image whose size differs from image_height_px x image_width_px is resized to it "
              "(true) or refused, aborting the goal (false).", dynamic=True)
    joint_states_topic: str = param("/joint_states", "sensor_msgs/JointState input.")
    chunk_topic: str = param("/vla/action_chunk", "ActionChunk output (to safety_node and the recorder).")
    instruction_topic: str = param("/vla/instruction", "The running goal's instruction (latched), for "
                                   "the recorder.")
    action_server_name: str = param("/vla/run_policy", "RunPolicy action server name.")
    teleop_engaged_topic: str = param(
        "/vla/teleop/engaged", "std_msgs/Bool (teleop_node): while true a running goal sends no chunks (a "
        "person has taken over); after it turns false the goal resumes from an observation taken after the "
        "release, and the result counts the interventions. '' = off.")
    replan_period_s: float = param(0.1, "Seconds between the starts of two inferences; a chunk is computed "
                                   "from the freshest observation every period.", range=(0.005, 10.0),
                                   dynamic=True)
    max_observation_age_s: float = param(
        0.5, "Every camera and the joint state must be younger than this to build an observation; a stale "
             "image must never become an action.", range=(0.01, 10.0), dynamic=True)
    observation_wait_s: float = param(
        5.0, "How long a goal waits for a fresh observation before it aborts naming the stale topic.",
        range=(0.0, 120.0), dynamic=True)
    keep_ratio: float = param(0.0, "AGVP: fraction of vision-expert patches kept, applied from the next chunk; "
                              "0: the checkpoint's own (pruning.keep_ratio, what it was trained with). No effect "
                              "on a checkpoint without AGVP (the baseline, shallow coupling).",
                              range=(0.0, 1.0), dynamic=True)
    new_goal_policy: str = param(
        "reject", "While a goal runs, a new goal is rejected (reject: the running task is never cut short "
                  "by accident) or replaces it (preempt: the running goal aborts).",
        choices=("reject", "preempt"), dynamic=True)
    recorder_timeout_s: float = param(5.0, "How long to wait for the recorder's services when a goal asks "
                                      "to record.", range=(0.1, 60.0), dynamic=True)

    def __post_init__(self) -> None:
        if 0.0 < self.keep_ratio < MIN_KEEP_RATIO:
            raise ConfigError(f"keep_ratio={self.keep_ratio}: 0 (the checkpoint's own) or in "
                              f"[{MIN_KEEP_RATIO}, 1]")
        if not self.joint_names or len(set(self.joint_names)) != len(self.joint_names):
            raise ConfigError(f"joint_names must be non-empty and unique, got {list(self.joint_names)}")
        if not self.camera_topics or len(set(self.camera_topics)) != len(self.camera_topics):
            raise ConfigError(f"camera_topics must be non-empty and unique, got {list(self.camera_topics)}")
