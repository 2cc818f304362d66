#!/usr/bin/env bash
# A VPC host container: default route through its gateway, then idle (use `docker compose exec`).
set -euo pipefail
ip route replace default via "$1"
# veth TX checksum offload leaves partial checksums that AF_XDP forwarding must complete; turning
# it off on the end hosts is the belt-and-braces setting the namespace lab also offers.
ethtool -K eth0 tx off >/dev/null 2>&1 || true
exec sleep infinity
