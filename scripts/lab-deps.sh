#!/usr/bin/env bash
# Installs the Debian packages the network-namespace lab (`natfw lab`, the lab e2e tests and
# bench/src/bin/lab_harness.rs) needs. Idempotent: does nothing when everything is present.
set -euo pipefail

pkgs=(
  iproute2 nftables ethtool      # namespaces, veths, the kernel baseline
  nginx-light                    # HTTP + HTTPS servers (falls back to nginx below)
  dnsmasq-base                   # authoritative answers for the lab names (no system service)
  openssh-server openssh-client  # sshd on its own port in the internet namespace
  iperf3 curl openssl dnsutils iputils-ping socat tcpdump procps python3
  keepalived                     # VRRP for the gateway pair (`natfw lab demo --scenario ha`)
  chromium chromium-driver       # the console's browser test (tests/lab/console.rs)
  rsyslog                        # the remote flow-log sink test (its own instance, own config)
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "lab-deps: all present"
  exit 0
fi
echo "lab-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
# policy-rc.d keeps package postinst scripts from starting nginx/sshd/iperf3/keepalived on the host: the lab
# starts its own instances inside namespaces.
had_policy=0
[ -e /usr/sbin/policy-rc.d ] && had_policy=1
if [ "$had_policy" -eq 0 ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
fi
trap '[ "$had_policy" -eq 0 ] && rm -f /usr/sbin/policy-rc.d' EXIT
if ! apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"; then
  # nginx-light is not in every Debian release; nginx is.
  fixed=("${missing[@]/nginx-light/nginx}")
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${fixed[@]}"
fi
echo "lab-deps: done"
