"""The stack split across two hosts (network namespaces, DDS over a veth link) and the faults of a
real deployment: a lossy slow link, a cut link, a frozen camera, a camera changing resolution, a
policy host that dies. One run of `python -m vla_ros.apps.two_hosts_drills` (real processes on real
namespaces, ~1 min) makes the faults; each test judges one drill from its JSON.

Skipped, with the reason, where network namespaces cannot be created (not root, no iproute2, a
container without CAP_NET_ADMIN); the lossy-link test alone skips where iptables is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from vla_ros.config import load_config
from vla_ros.config.safety import SafetyConfig
from vla_ros.apps.netns import TwoHosts
from vla_ros.paths import PACKAGE_ROOT, config_file
from vla_ros.recording.reader import LeRobotDatasetReader
from vla_ros.apps.two_hosts_drills import DRILLS

_REASON = TwoHosts.unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"two hosts unavailable: {_REASON}")
NO_IPTABLES = shutil.which("iptables") is None  # scripts/setup.sh installs it when root
SAFETY = load_config(config_file("sim.yaml"), "safety_node", SafetyConfig)
TIMING_KEYS = ("observation_age_ms", "decode_ms", "preprocess_ms", "inference_ms", "publish_ms")


def _run(module: str, args: list[str], timeout_s: float = 420.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=PACKAGE_ROOT, env=dict(os.environ))


@pytest.fixture(scope="module")
def drills(tmp_path_factory):
    out = tmp_path_factory.mktemp("drills")
    drills = [d for d in DRILLS if not (d == "lossy_link" and NO_IPTABLES)]
    # JPEG across the link, as recommended for a lossy one (raw images die at 2 % packet loss: the
    # goal aborts naming the stale camera, docs/two_hosts.md); the short demo below sends raw ones.
    done = _run("vla_ros.apps.two_hosts_drills", ["--output", str(out), "--images", "compressed", "--drills", *drills])
    assert done.returncode == 0, f"drills failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads((out / "drills.json").read_text())
    report["stdout"] = done.stdout
    return report


def _link_mb(stdout: str) -> float:
    """MB the robot host sent over the link, from run_on_robot_host's last line."""
    return float(stdout.split("link traffic: robot->gpu ")[1].split(" MB")[0])


def assert_safe(drill: dict) -> None:
    """Every command the robot got is finite, inside the position limits, and no faster than the
    velocity limit between consecutive send stamps (x1.5 for control-tick jitter) while commands
    stream; after a silence (a hold that stopped sending, a sim reset) a new run starts from the
    measured position, so the pair across the gap is not a step."""
    if not drill["commands"]:  # nothing sent is safe (on a starved machine every chunk may arrive too old)
        return
    stamped = np.array([c for _, c in drill["commands"]], dtype=float)
    stamps, q = stamped[:, 0], stamped[:, 1:]
    lim = SAFETY.limits
    assert np.all(np.isfinite(q))
    assert np.all(q >= np.asarray(lim.position_min_rad) - 1e-9) and np.all(q <= np.asarray(lim.position_max_rad) + 1e-9)
    period = 1.0 / SAFETY.control_rate_hz
    gaps = np.diff(stamps)
    streaming = gaps <= 5 * period
    dt = np.maximum(gaps, period)[:, None]
    speed_ratio = (np.abs(np.diff(q, axis=0)) / (np.asarray(lim.max_velocity_rad_s) * dt))[streaming]
    if speed_ratio.size:  # on a starved machine a drill may see only scattered commands
        assert speed_ratio.max() <= 1.5, f"a command moved {speed_ratio.max():.2f}x the velocity limit"


def assert_stale_chunks_refused(drill: dict) -> None:
    """A chunk older than max_chunk_age_s on arrival at safety_node is refused and counted."""
    old = [t for t in drill["safety_timing"] if t["age_at_receipt_ms"] > SAFETY.max_chunk_age_s * 1e3]
    assert all(t["accepted"] == "false" for t in old), "a chunk older than max_chunk_age_s was accepted"
    first, last = drill["status_first"], drill["status_last"]
    refused = sum(int(last[k]) - int(first[k]) for k in ("dropped_chunks", "rejected_chunks"))
    assert refused >= len(old) - 1, f"{len(old)} old chunks arrived but the counters grew by {refused}"  # -1: a status tick may precede the window


def assert_held_at_rest(drill: dict) -> None:
    """After losing its chunks safety_node holds: the watchdog's state, and the last command it
    sent left the arm (nearly) at rest: at most two control ticks of braking from zero speed, not
    stopped mid-motion. Speed from send stamps, so a command lost on the way does not matter."""
    assert drill["status_last"]["state"] == "hold", drill["status_last"]
    last = np.array([c for _, c in drill["commands"][-2:]], dtype=float)
    if len(last) < 2:  # it sent (at most) one command in the whole drill: nothing was moving
        return
    period = 1.0 / SAFETY.control_rate_hz
    speed = np.abs(last[1, 1:] - last[0, 1:]) / max(last[1, 0] - last[0, 0], period)
    braking = np.asarray(SAFETY.limits.max_acceleration_rad_s2) * 2 * period
    assert np.all(speed <= braking + 1e-9), f"the last command still moved at {speed} rad/s"


def test_baseline_goal_and_latency_budget_cross_the_link(drills):
    """Catches: discovery that does not cross the hosts (goal never accepted), SHM used between
    'hosts' (no traffic on the link), a latency-budget field missing or negative."""
    drill = drills["drills"]["baseline"]
    assert drill["goals"][0]["outcome"] == "completed", drill["goals"][0]
    assert drill["commands"], "safety_node sent no command at all"
    assert_safe(drill)
    assert drill["policy_timing"] and drill["safety_timing"]
    for timing in drill["policy_timing"]:
        assert all(timing[k] >= 0.0 for k in TIMING_KEYS), timing
    received = {t["chunk_id"] for t in drill["safety_timing"]}
    assert len(received & {t["chunk_id"] for t in drill["policy_timing"]}) >= len(received) - 2  # window edges
    assert _link_mb(drills["stdout"]) > 1.0, "data did not cross the link (shared memory between the namespaces?)"


@pytest.mark.skipif(NO_IPTABLES, reason="iptables is not installed: no way to drop packets at random here "
                    "(no netem in this kernel); scripts/setup.sh installs it when run as root")
def test_lossy_slow_link_completes_or_aborts_with_reason_and_never_violates(drills):
    """Catches: a lossy, rate-limited link that makes safety_node act on late chunks or send an
    out-of-limit command, or a goal that ends without a reason."""
    drill = drills["drills"]["lossy_link"]
    goal = drill["goals"][0]
    assert drill["fault_s"], "the fault was never applied"
    assert goal["outcome"] == "completed" or (goal["outcome"] == "aborted" and goal["reason"]), goal
    assert_safe(drill)
    assert_stale_chunks_refused(drill)


def test_link_cut_for_two_seconds_recovers_and_next_goal_succeeds(drills):
    """Catches: discovery that does not recover after the link returns (second goal rejected or
    never answered), safety_node moving on old chunks during the cut."""
    drill = drills["drills"]["link_cut"]
    first, second = drill["goals"]
    assert [e for e, _ in drill["events"]] == ["down", "up"]
    assert first["outcome"] == "completed" or first["reason"], first
    assert second["outcome"] == "completed" and second["chunks"] > 0, second
    assert ["hold", "chunk_timeout"] in drill["states"], "safety_node never held while the link was down"
    assert_safe(drill)
    assert_stale_chunks_refused(drill)


def test_frozen_camera_aborts_naming_the_camera_and_safety_holds(drills):
    """Catches: a camera that repeats its last frame (identical stamps) being used as fresh,
    which would steer the arm from an old picture."""
    drill = drills["drills"]["frozen_camera"]
    goal = drill["goals"][0]
    assert drill["switched_s"], "the camera never froze (the goal produced no chunks first)"
    assert goal["outcome"] == "aborted" and "/camera/relay" in goal["reason"] and "stale" in goal["reason"], goal
    assert_safe(drill)
    assert_held_at_rest(drill)


def test_camera_switching_resolution_mid_run_keeps_running_and_is_recorded(drills):
    """Catches: a resolution change killing the goal or the recorder (a size the model or the
    video encoder did not expect), or going unnoticed in the episode's report."""
    drill = drills["drills"]["resolution_switch"]
    goal = drill["goals"][0]
    assert goal["outcome"] == "completed", goal
    switched = drill["switched_s"][0]
    assert any(t["t"] > switched + 0.5 for t in drill["policy_timing"]), "no chunk after the switch"
    assert_safe(drill)
    reader = LeRobotDatasetReader(drills["dataset"])
    episode = next(e for e in reader.episodes if str(e.episode_index) == goal["episode_id"])
    assert episode.report["image_size_change_count"] >= 1, episode.report


def test_policy_host_killed_mid_goal_safety_holds_and_episode_is_kept(drills):
    """Catches: safety_node replaying the dead policy's plan or stopping mid-motion, and a
    recording lost (or left open) when the policy host that started it dies."""
    drill = drills["drills"]["policy_killed"]
    assert drill["policy_exit"] == -9 and drill["killed_s"]
    assert drill["stop_episode"]["success"], drill["stop_episode"]
    assert_safe(drill)
    assert_held_at_rest(drill)
    reader = LeRobotDatasetReader(drills["dataset"])
    episode = reader.episodes[-1]
    assert episode.stop_reason or episode.report, episode
    table = reader.episode_table(episode.episode_index)
    frames = np.asarray(table["frame_index"])
    assert len(frames) > 20 and np.array_equal(frames, np.arange(len(frames))), "frames missing from the episode"
    assert np.allclose(np.diff(np.asarray(table["timestamp"])), 1.0 / reader.fps, atol=1e-3)
    assert reader.episode_video(episode.episode_index, reader.camera_keys[0]).shape[0] == len(frames)


def test_two_hosts_demo_short(tmp_path):
    """Catches: scripts/two_hosts.sh's entry point broken (argument handling, namespaces left
    behind, summary not written) with raw rgb8 images fragmented across the link."""
    out = tmp_path / "demo"
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    done = _run("vla_ros.apps.two_hosts", ["--duration-s", "3", "--device", "cpu", "--output-dir", str(out)])
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcome"] == "completed" and summary["chunks"] > 0, summary
    assert LeRobotDatasetReader(out / "dataset").num_episodes == 1
    assert _link_mb(done.stdout) > 5.0, "raw images did not cross the link (3 s at 15 Hz is ~10 MB)"
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert not {n for n in after - before if n.startswith("vla")}, "network namespaces left behind"


def test_fastdds_profile_gives_large_socket_receive_buffers():
    """Catches: the two-host Fast DDS profile not applied (or not parsed): with the OS default 212 kB
    UDP receive buffer about half of the raw images overflowed it (UdpRcvbufErrors) on the GPU host."""
    child = ("import time, rclpy; from sensor_msgs.msg import Image; rclpy.init(); n = rclpy.create_node('rb');"
             " n.create_subscription(Image, '/rb/image_raw', lambda m: None, 1); time.sleep(20)")
    with TwoHosts(tag=f"rb{os.getpid() % 10000}") as spec:
        proc = subprocess.Popen([*spec.prefix("gpu"), sys.executable, "-c", child], env=spec.env("gpu"),
                                start_new_session=True)
        try:
            buffers: list[int] = []
            for _ in range(100):  # until the participant has opened its sockets
                ss = subprocess.run([*spec.prefix("gpu"), "ss", "-uamnp"], capture_output=True, text=True).stdout
                buffers = [int(tok.split(",")[0][2:]) for tok in ss.replace("(", ",").split(",")
                           if tok.startswith("rb")]
                if len(buffers) >= 2:
                    break
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait()
    assert buffers, "no UDP socket seen on the GPU host"
    assert max(buffers) >= 4_000_000, f"UDP receive buffers {buffers} (bytes): the 4 MB profile was not applied"
