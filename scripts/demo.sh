#!/usr/bin/env bash
# The README's first command: set up (idempotent), then run the policy on the simulated arm.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
# shellcheck source=/dev/null
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec python -m vla_ros.apps.demo "$@"
