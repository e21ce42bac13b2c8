#!/usr/bin/env bash
# The demo split across two hosts (network namespaces): policy_node on the "GPU host", the robot's
# nodes on the "robot host", DDS across a veth link. Needs root. Options: those of scripts/demo.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec python -m vla_ros.apps.two_hosts "$@"
