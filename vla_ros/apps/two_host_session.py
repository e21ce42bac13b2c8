"""SimSession split across two hosts: policy_node on the GPU host, the rest on the robot host.

The hosts are network namespaces made by vla_ros.apps.netns.TwoHosts; this process (the operator's
client) must itself run on the robot host (`ip netns exec <robot ns> ...`), as it would on the
robot's computer. Everything else (start-up, goals, reports, clean-up) is SimSession's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vla_ros.apps.netns import TwoHostsSpec
from vla_ros.apps.session import SimSession



class TwoHostSession(SimSession):
    def __init__(self, spec: TwoHostsSpec, log_dir: Path, *args: Any,
                 node_params: dict[str, dict[str, Any]] | None = None, policy_host: str = "gpu",
                 **kwargs: Any) -> None:
        self.spec = spec
        self.policy_host = policy_host  # "robot": everything on one host (the same-host reference)
        self.node_params = node_params or {}  # extra -p overrides per node (e.g. policy camera topics)
        super().__init__(log_dir, *args, **kwargs)

    def host_of(self, node: str) -> str:
        return self.policy_host if node == "policy_node" else "robot"

    def start_node(self, node: str, params: dict[str, Any] | None = None):
        """Start (or restart, after a kill) `node` on its host."""
        host = self.host_of(node)
        merged = {**(params or {}), **self.node_params.get(node, {})}
        return self.procs.start(node, self.params_file, merged or None, prefix=self.spec.prefix(host),
                                env=self.spec.env(host, self.procs.env))

    def _start_nodes(self, checkpoint_dir: str, device: str, dataset_root: str | None, backend: str) -> None:
        self.start_node("sim_robot_node")
        self.start_node("safety_node")
        policy_params: dict[str, Any] = {"device": device, "inference_backend": backend}
        if checkpoint_dir:
            policy_params["checkpoint_dir"] = str(Path(checkpoint_dir).resolve())
        self.start_node("policy_node", policy_params)
        if self.record:
            self.start_node("recorder_node", {"dataset_root": str(Path(dataset_root).resolve())}
                            if dataset_root else None)
