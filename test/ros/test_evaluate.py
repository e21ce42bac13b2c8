"""Evaluation end to end: the shipped checkpoint through policy_node -> safety_node -> sim_robot_node for one
short episode; the JSON has the documented fields and the PNG is written."""

from __future__ import annotations

import json

import matplotlib.image
import psutil
import torch
from safetensors.torch import load_file

from vla_ros.apps.evaluate import main as evaluate_main
from vla_ros.apps.evaluate import random_weights_checkpoint
from vla_ros.model.checkpoint import NORM_STATS_FILE, WEIGHTS_FILE, load_config
from vla_ros.model.onnx_export import CACHE_ENV
from vla_ros.paths import default_checkpoint_dir


def test_random_weights_keep_the_interface_and_change_the_weights(tmp_path) -> None:
    shipped = default_checkpoint_dir()
    baseline = random_weights_checkpoint(shipped, tmp_path / "random", seed=1)
    assert load_config(baseline) == load_config(shipped)
    assert (baseline / NORM_STATS_FILE).read_text() == (shipped / NORM_STATS_FILE).read_text()
    trained, random = load_file(shipped / WEIGHTS_FILE), load_file(baseline / WEIGHTS_FILE)
    assert trained.keys() == random.keys()
    matrices = [k for k, v in trained.items() if v.ndim == 2]
    assert all(not torch.equal(trained[k], random[k]) for k in matrices), "a weight matrix kept its trained values"


def test_short_evaluation_writes_metrics_and_plot(tmp_path, monkeypatch) -> None:
    """On the onnxruntime backend (test_closed_loop drives the torch one through the same SimSession): the
    evaluation passes --backend to policy_node and records what served the episodes."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "onnx"))  # the node process inherits it: the repo stays clean
    out = tmp_path / "eval"
    code = evaluate_main(["--tasks", "pour", "--episodes", "1", "--time-limit-s", "3", "--output", str(out),
                          "--device", "cpu", "--frames-per-episode", "2", "--seed0", "1000",
                          "--backend", "onnxruntime"])
    assert psutil.Process().children(recursive=True) == [], "node processes were left running"
    assert code == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert result["checkpoint"] == str(default_checkpoint_dir().resolve()) and not result["random_weights"]
    assert result["inference_backend"] == "onnxruntime"
    assert result["policy_info"]["backend"] == "onnxruntime"
    assert result["policy_info"]["provider"] == "CPUExecutionProvider"
    pour = result["summary"]["pour"]
    assert pour["episodes"] == 1 and 0.0 <= pour["success_rate"] <= 1.0
    assert pour["episode_length_s"]["mean"] >= 3.0
    assert pour["latency_ms"]["count"] > 0 and pour["latency_ms"]["p99"] >= pour["latency_ms"]["p50"] > 0
    assert isinstance(pour["clipped_commands"], int) and pour["clipped_commands"] >= 0
    episode = result["episodes"][0]
    assert episode["task"] == "pour" and episode["seed"] == 1000 and episode["outcome"] == "completed"
    # The shipped checkpoint fits config/sim.yaml: its chunks pass the safety node and reach the robot.
    assert episode["chunks"] > 5 and episode["commands_sent"] > 20 and episode["rejected_chunks"] < episode["chunks"]
    assert {"success", "score", "success_time_s", "clipped_commands", "latency_ms", "kept_expert_tokens"} <= set(episode)
    image = matplotlib.image.imread(out / "evaluation.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
