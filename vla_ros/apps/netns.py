"""Two "hosts" on one Linux machine: network namespaces joined by a veth pair (stdlib + `ip`).

The policy runs on a GPU host and the robot's stack on the robot's computer; this stands both up
as namespaces so the split runs (and fails) like a real one: DDS traffic crosses a real link
that can be cut, rate-limited and made lossy. Needs root (CAP_NET_ADMIN) and iproute2.

What makes the namespaces behave like two machines for Fast DDS:
- Discovery: ROS_STATIC_PEERS names the other host's address, and ROS_AUTOMATIC_DISCOVERY_RANGE
  stays LOCALHOST (nothing else on the network is discovered). Unicast peers, not multicast,
  because multicast is what Wi-Fi access points and managed switches drop or throttle; no XML
  profile for discovery and no discovery-server process to keep alive on one of the hosts.
- Shared memory: Fast DDS uses its shared-memory transport between participants with the same
  /etc/machine-id, and namespaces share /dev/shm. `ip netns exec` bind-mounts
  /etc/netns/<ns>/machine-id over /etc/machine-id, so each namespace gets its own id: traffic
  between the hosts goes over UDP on the link, traffic within a host still uses shared memory.
- Large messages: an image is several 64 kB UDP datagrams arriving together; the OS default
  receive buffer (212 kB) overflowed for about half the raw images, so config/fastdds_two_hosts.xml
  (FASTDDS_DEFAULT_PROFILES_FILE) asks Fast DDS for 4 MB socket buffers.
- Faults: link down/up (`ip link`), a rate limit with tail drop (tbf qdisc: queueing delay on a
  slow link) and random loss per packet (iptables `statistic --mode random` DROP in the raw table's
  PREROUTING on the receiving side, before IP reassembly).
  This kernel has no netem, so there is no fixed added delay; the rate limit is the delay.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from vla_ros.errors import VlaRosError
from vla_ros.paths import config_file

HOSTS = ("gpu", "robot")


class NamespaceError(VlaRosError):
    """Network namespaces cannot be created or changed here (not root, no iproute2, ...)."""


def _run(*cmd: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as err:
        raise NamespaceError(f"{cmd[0]} is not installed") from err
    if done.returncode != 0:
        raise NamespaceError(f"`{' '.join(cmd)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclasses.dataclass(frozen=True)
class Host:
    name: str  # gpu | robot
    netns: str  # namespace name (unique per TwoHosts)
    device: str  # its end of the veth pair
    address: str  # IPv4 address on the link


@dataclasses.dataclass(frozen=True)
class TwoHostsSpec:
    """Both hosts; travels to child processes as JSON (they use it, they do not own it)."""

    gpu: Host
    robot: Host

    def host(self, name: str) -> Host:
        return {"gpu": self.gpu, "robot": self.robot}[name]

    def peer(self, name: str) -> Host:
        return self.robot if name == "gpu" else self.gpu

    def prefix(self, name: str) -> list[str]:
        """Command prefix that runs a program on host `name`."""
        return ["ip", "netns", "exec", self.host(name).netns]

    def env(self, name: str, base: dict[str, str] | None = None) -> dict[str, str]:
        """The ROS environment of a process on host `name`: discovery reaches the other host."""
        env = dict(os.environ if base is None else base)
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        env["ROS_STATIC_PEERS"] = self.peer(name).address
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(config_file("fastdds_two_hosts.xml")))
        env[SPEC_ENV] = self.to_json()
        return env

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TwoHostsSpec":
        data = json.loads(text)
        return cls(gpu=Host(**data["gpu"]), robot=Host(**data["robot"]))

    def link_bytes(self) -> dict[str, int]:
        """Bytes the robot host's end has sent and received (proof traffic crossed the link)."""
        out = _run("ip", "-j", "-s", "-n", self.robot.netns, "link", "show", "dev", self.robot.device)
        stats = json.loads(out)[0]["stats64"]
        return {"robot_to_gpu": int(stats["tx"]["bytes"]), "gpu_to_robot": int(stats["rx"]["bytes"])}

    # -- faults on the link (each replaces the previous one of its kind) --
    def set_link(self, up: bool) -> None:
        """Cut (down) or restore (up) the link; both ends, as when a cable or radio goes."""
        for host in (self.gpu, self.robot):
            _run("ip", "-n", host.netns, "link", "set", host.device, "up" if up else "down")

    def set_loss(self, probability: float) -> None:
        """Drop each packet arriving on either host with `probability` (0 clears).

        Per packet as it comes off the wire, i.e. per IP fragment: the rule sits in the raw table's
        PREROUTING, before reassembly (the INPUT chain would only see whole reassembled datagrams and
        drop a 64 kB DDS fragment as a unit, which understates what loss does to large messages).
        """
        for host in (self.gpu, self.robot):
            _run("ip", "netns", "exec", host.netns, "iptables", "-t", "raw", "-F", "PREROUTING")
            if probability > 0:
                _run("ip", "netns", "exec", host.netns, "iptables", "-t", "raw", "-A", "PREROUTING", "-i",
                     host.device, "-m", "statistic", "--mode", "random", "--probability", f"{probability:.4f}",
                     "-j", "DROP")

    def set_rate(self, rate_kbit: int, queue_ms: int = 200) -> None:
        """Limit both directions to `rate_kbit` with up to `queue_ms` of queueing (0 rate clears)."""
        for host in (self.gpu, self.robot):
            subprocess.run(["tc", "-n", host.netns, "qdisc", "del", "dev", host.device, "root"],
                           capture_output=True)
            if rate_kbit > 0:
                _run("tc", "-n", host.netns, "qdisc", "add", "dev", host.device, "root", "tbf",
                     "rate", f"{rate_kbit}kbit", "burst", "64kb", "latency", f"{queue_ms}ms")

    def clear_faults(self) -> None:
        self.set_rate(0)
        self.set_loss(0.0)
        self.set_link(True)


SPEC_ENV = "VLA_ROS_TWO_HOSTS"


def current_spec() -> TwoHostsSpec | None:
    """The hosts this process was started into by TwoHosts, if any."""
    text = os.environ.get(SPEC_ENV)
    return TwoHostsSpec.from_json(text) if text else None


class TwoHosts:
    """Create the namespaces and the link; `with TwoHosts() as spec:` removes them again.

    Names carry this process's id so parallel runs (CI, other users) never collide.
    """

    def __init__(self, subnet: str = "10.231.0", tag: str | None = None) -> None:
        tag = tag or f"{os.getpid() % 100000}"
        self.spec = TwoHostsSpec(
            gpu=Host("gpu", f"vla{tag}gpu", f"vg{tag}", f"{subnet}.1"),
            robot=Host("robot", f"vla{tag}robot", f"vr{tag}", f"{subnet}.2"))
        self._created: list[str] = []

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why namespaces cannot be made here, or None when they can."""
        if shutil.which("ip") is None:
            return "iproute2 (`ip`) is not installed"
        if os.geteuid() != 0:
            return "network namespaces need root (CAP_NET_ADMIN); this process is not root"
        probe = f"vlaprobe{os.getpid()}"
        try:
            _run("ip", "netns", "add", probe)
            _run("ip", "netns", "del", probe)
        except NamespaceError as err:
            return f"cannot create a network namespace: {err}"
        return None

    def __enter__(self) -> TwoHostsSpec:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self.spec

    def _setup(self) -> None:
        gpu, robot = self.spec.gpu, self.spec.robot
        for host in (gpu, robot):
            _run("ip", "netns", "add", host.netns)
            self._created.append(host.netns)
            etc = Path("/etc/netns") / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        _run("ip", "link", "add", gpu.device, "type", "veth", "peer", "name", robot.device)
        for host in (gpu, robot):
            _run("ip", "link", "set", host.device, "netns", host.netns)
            _run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", host.device)
            _run("ip", "-n", host.netns, "link", "set", host.device, "up")
            _run("ip", "-n", host.netns, "link", "set", "lo", "up")

    def close(self) -> None:
        for netns in reversed(self._created):  # deleting a namespace removes its veth end (and the pair)
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / netns, ignore_errors=True)
        self._created.clear()

    def __exit__(self, *exc) -> None:
        self.close()
