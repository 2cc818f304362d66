#!/usr/bin/env bash
# A gateway container: name its interfaces as the config expects (inside0 / outside0, found by
# address since Docker's eth numbering is not stable), route out via the internet container,
# then run natfw in the path until the container stops (SIGTERM: clean exit, flow log flushed).
# Usage: gateway.sh NAME INSIDE_ADDR EIP
set -euo pipefail
name=$1 inside=$2 eip=$3
dev_of() { ip -o -4 addr show | awk -v a="$1" '$4 ~ "^"a"/" {print $2; exit}'; }
rename() {
  local dev; dev=$(dev_of "$1")
  [ "$dev" = "$2" ] && return
  ip link set dev "$dev" down
  ip link set dev "$dev" name "$2"
  ip link set dev "$2" up
}
rename "$inside" inside0
rename "$eip" outside0
ip route replace default via 198.51.100.254 dev outside0
cd /lab-state
cp "/natfw/examples/lab/scenario-1-$name.yaml" "$name.yaml"
exec natfw run --config "$name.yaml"
