"""The demo split across two hosts: policy_node on a "GPU host", the robot's stack on a "robot host".

    sudo bash scripts/two_hosts.sh [demo options: --task write --duration-s 20 --device cpu ...]

The hosts are Linux network namespaces joined by a veth pair (vla_ros.apps.netns: why static peers,
why each namespace gets its own machine-id). The GPU host runs policy_node; the robot host runs
sim_robot_node, safety_node, recorder_node and this client. DDS crosses the link over UDP: the
camera images are fragmented by Fast DDS and IP. Prints the demo's summary; exit code as the demo.
Needs root; says why and exits 2 where namespaces cannot be made.
"""

from __future__ import annotations

import functools
import subprocess
import sys

from vla_ros.apps import demo
from vla_ros.apps.netns import TwoHosts, current_spec


def _inside(argv: list[str]) -> int:
    from vla_ros.apps.two_host_session import TwoHostSession  # rclpy only on the robot host's side

    spec = current_spec()
    images = "raw"
    if "--images" in argv:  # ours, not the demo's
        i = argv.index("--images")
        images = argv[i + 1]
        del argv[i:i + 2]
    node_params = {}
    if images == "compressed":  # JPEG across the link, as image_transport's /compressed; raw stays on the robot
        node_params = {"sim_robot_node": {"camera.jpeg_quality": 80},
                       "policy_node": {"camera_topics": "[/camera/image_raw/compressed]"}}
    elif images != "raw":
        print(f"--images must be raw or compressed, not {images!r}", file=sys.stderr)
        return 2
    print(f"robot host {spec.robot.netns} ({spec.robot.address}): sim_robot_node, safety_node, "
          f"recorder_node, this client\nGPU host   {spec.gpu.netns} ({spec.gpu.address}): policy_node\n"
          f"discovery: ROS_STATIC_PEERS (unicast to the other host), ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; "
          f"images across the link: {images}", flush=True)
    return demo.main(argv, make_session=functools.partial(TwoHostSession, spec, node_params=node_params))


def run_on_robot_host(python_args: list[str]) -> int:
    """Create the two hosts, run `python *python_args` on the robot host, remove the hosts.

    The child finds the hosts in its environment (vla_ros.apps.netns.current_spec). Exit code: the
    child's, or 2 (with the reason on stderr) where namespaces cannot be made.
    """
    reason = TwoHosts.unavailable_reason()
    if reason:
        print(f"two hosts: {reason}", file=sys.stderr)
        return 2
    with TwoHosts() as spec:
        child = subprocess.run([*spec.prefix("robot"), sys.executable, *python_args],
                               env=spec.env("robot"))
        moved = spec.link_bytes()
        print(f"link traffic: robot->gpu {moved['robot_to_gpu'] / 1e6:.1f} MB, "
              f"gpu->robot {moved['gpu_to_robot'] / 1e6:.1f} MB")
    return child.returncode


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if current_spec() is not None:
        return _inside(argv)
    if not any(a.startswith("--output-dir") for a in argv):
        argv += ["--output-dir", "outputs/two_hosts"]
    return run_on_robot_host(["-m", "vla_ros.apps.two_hosts", *argv])


if __name__ == "__main__":
    sys.exit(main())
