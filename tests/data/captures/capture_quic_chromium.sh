#!/bin/sh
# Re-creates quic_chromium.pcap: Debian's chromium opening a QUIC connection from 10.0.1.10 to
# 198.51.100.30:443 in two network namespaces joined by a veth pair (run as root). The "server"
# is a plain UDP socket that never answers: only the client's Initials are wanted, and Chromium
# sends its complete ClientHello before hearing from the server.
set -eu
OUT=${1:-quic_chromium.pcap}
NAME=www.quic.example.test
cleanup() {
    [ -n "${SINK:-}" ] && kill "$SINK" 2>/dev/null || true
    [ -n "${DUMP:-}" ] && kill "$DUMP" 2>/dev/null || true
    ip netns del l7cap-c 2>/dev/null || true
    ip netns del l7cap-s 2>/dev/null || true
}
trap cleanup EXIT
ip netns add l7cap-c
ip netns add l7cap-s
ip link add l7cap0 netns l7cap-c type veth peer name l7cap1 netns l7cap-s
ip -n l7cap-c addr add 10.0.1.10/24 dev l7cap0
ip -n l7cap-s addr add 198.51.100.30/24 dev l7cap1
ip -n l7cap-c link set l7cap0 up
ip -n l7cap-s link set l7cap1 up
ip -n l7cap-c link set lo up
ip -n l7cap-c route add 198.51.100.30/32 dev l7cap0
ip -n l7cap-s route add 10.0.1.10/32 dev l7cap1
ip netns exec l7cap-s python3 -c 'import socket,time
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("198.51.100.30",443)); time.sleep(30)' &
SINK=$!
ip netns exec l7cap-s tcpdump -i l7cap1 -U -s 0 -w "$OUT" udp port 443 2>/dev/null &
DUMP=$!
sleep 1
ip netns exec l7cap-c timeout 10 chromium --headless=new --no-sandbox --disable-gpu \
    --disable-dev-shm-usage --user-data-dir="$(mktemp -d)" \
    --origin-to-force-quic-on=$NAME:443 --host-resolver-rules="MAP $NAME 198.51.100.30" \
    --dump-dom "https://$NAME/" >/dev/null 2>&1 || true
sleep 1
