#!/usr/bin/env bash
# Builds the docker-compose lab's images without any image registry (root, Docker Engine):
#
#   natfw-base:<hash>  a minimal Debian (debootstrap --variant=minbase) with the lab's servers and
#                      clients, imported with `docker import`; <hash> covers the base recipe below
#                      (so the package list), the suite and the architecture, so a rerun that finds the
#                      tag skips the debootstrap entirely.
#   natfw-lab:<hash>   natfw-base plus the natfw binary and the container entry script
#                      (lab/container/node.sh); <hash> covers them and the base. Also tagged
#                      natfw-lab:latest, the image lab/compose/*.yml run.
#
# Usage: scripts/build-images.sh [path/to/natfw]   (default target/release/natfw)
#        scripts/build-images.sh --base-only        (the Debian base alone)
# The Debian mirror is the one this machine's apt uses (/etc/apt/sources.list*); NATFW_MIRROR
# overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."

base_only=0
[ "${1:-}" = --base-only ] && base_only=1 && shift
natfw_bin=${1:-target/release/natfw}
if [ "$base_only" = 0 ] && [ ! -x "$natfw_bin" ]; then
  echo "build-images: $natfw_bin missing (cargo build --release -p natfw-gateway)" >&2; exit 1
fi
command -v docker >/dev/null || { echo "build-images: docker missing" >&2; exit 1; }

# --- base recipe (its text is hashed into the base tag) ---
# The lab's servers and clients (the same programs as scripts/lab-deps.sh) plus keepalived for
# the gateway pair.
pkgs=(
  iproute2 nftables ethtool iptables
  nginx-light dnsmasq-base openssh-server openssh-client
  iperf3 curl openssl ca-certificates dnsutils iputils-ping socat tcpdump procps python3
  keepalived
)

# shellcheck disable=SC1091
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
arch=$(dpkg --print-architecture)

mirror() {
  if [ -n "${NATFW_MIRROR:-}" ]; then echo "$NATFW_MIRROR"; return; fi
  local f
  # deb822 files: the first URIs of a stanza whose Suites include the plain suite.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk -v s="$suite" '
      /^[[:space:]]*$/ { if (u != "" && ok) { print u; exit } u=""; ok=0; next }
      /^URIs:/ { u=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok=1 }
      END { if (u != "" && ok) print u }' "$f" | head -n1
  done | head -n1 | grep . && return
  # one-line format
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                        if ($(i + 1) == s) { print $i; exit } }'
}

hash_of() { sha256sum | cut -c1-16; }
recipe() { sed -n '/^# --- base recipe/,/^# --- end of base recipe/p' "$0"; }
base_hash=$( { recipe; echo "$suite $arch ${pkgs[*]}"; } | hash_of)
base="natfw-base:$base_hash"

t0=$(date +%s)
if docker image inspect "$base" >/dev/null 2>&1; then
  echo "build-images: $base present (cached)"
else
  command -v debootstrap >/dev/null || {
    echo "build-images: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
  url=$(mirror)
  [ -n "$url" ] || { echo "build-images: no Debian mirror in /etc/apt (set NATFW_MIRROR)" >&2; exit 1; }
  root=$(mktemp -d /var/tmp/natfw-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "build-images: debootstrap $suite ($arch) into $root"
  inc=$(IFS=,; echo "${pkgs[*]}")
  if ! debootstrap --variant=minbase --arch="$arch" --include="$inc" "$suite" "$root" "$url" \
      >"$root.log" 2>&1; then
    tail -n 30 "$root.log" >&2
    tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    rm -f "$root.log"
    exit 1
  fi
  rm -f "$root.log"
  # No package cache or lists in the image; no services started by anyone but the lab.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
         "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
  rm -rf "$root"
  trap - EXIT
  echo "build-images: $base imported in $(( $(date +%s) - t0 )) s"
fi
# --- end of base recipe ---

[ "$base_only" = 1 ] && exit 0

# The natfw image: base + binary + entry script (rebuilt when they change; configs, keys and
# logs are in the state directory `natfw lab compose up` mounts).
ctx=$(mktemp -d /var/tmp/natfw-lab-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp "$natfw_bin" "$ctx/natfw"
cp lab/container/node.sh "$ctx/node.sh"
lab_hash=$( { echo "$base"; cd "$ctx" && find . -type f | sort | xargs sha256sum; } | hash_of)
lab="natfw-lab:$lab_hash"
if docker image inspect "$lab" >/dev/null 2>&1; then
  echo "build-images: $lab present (cached)"
else
  cat >"$ctx/Dockerfile" <<EOF
FROM $base
COPY natfw /usr/local/bin/natfw
COPY node.sh /natfw/node.sh
EOF
  DOCKER_BUILDKIT=0 docker build -q -t "$lab" "$ctx" >/dev/null
  echo "build-images: $lab built"
fi
docker tag "$lab" natfw-lab:latest
# Older natfw layers and bases are of no further use (each natfw layer is a few hundred MB).
docker images --format '{{.Repository}}:{{.Tag}}' |
  grep -E '^natfw-(lab|base):' | grep -v -x -e natfw-lab:latest -e "$lab" -e "$base" |
  xargs -r docker rmi >/dev/null 2>&1 || true
echo "build-images: natfw-lab:latest = $lab ($(( $(date +%s) - t0 )) s)"
