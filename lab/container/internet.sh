#!/usr/bin/env bash
# The "internet" container: server addresses on lo, CA + certificates generated here (private
# keys never leave the lab-state volume), nginx, dnsmasq, sshd, iperf3, UDP echo.
set -euo pipefail
S=/lab-state
mkdir -p "$S" /run/sshd
for a in 203.0.113.10 203.0.113.11 203.0.113.12 203.0.113.13 203.0.113.53 203.0.113.7 \
         203.0.113.22 203.0.113.5; do
  ip addr add "$a/32" dev lo 2>/dev/null || true
done
names=(updates.vendor.test api.vendor.test pay.partner.test blocked.example.test)
addrs=(203.0.113.10 203.0.113.11 203.0.113.12 203.0.113.13)
if [ ! -f "$S/server.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$S/ca.key" \
    -out "$S/ca.crt" -days 2 -subj "/CN=natfw lab CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$S/server.key" \
    -out "$S/server.csr" -subj "/CN=natfw lab servers"
  san=$(printf 'DNS:%s,' "${names[@]}")
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
    "${san%,}" >"$S/server.ext"
  openssl x509 -req -in "$S/server.csr" -CA "$S/ca.crt" -CAkey "$S/ca.key" -CAcreateserial \
    -out "$S/server.crt" -days 2 -extfile "$S/server.ext"
  ssh-keygen -q -t ed25519 -N '' -f "$S/ssh_host_ed25519_key"
fi
{
  echo "worker_processes 1; pid $S/nginx.pid; user root; events { worker_connections 4096; }"
  echo "http { log_format lab '\$remote_addr \$host \$server_addr \$scheme \"\$request\" \$status \$request_length';"
  echo "  access_log $S/access.log lab; default_type text/plain; ssl_protocols TLSv1.2 TLSv1.3;"
  echo "  ssl_certificate $S/server.crt; ssl_certificate_key $S/server.key;"
  for i in "${!names[@]}"; do
    echo "  server { listen ${addrs[$i]}:80; listen ${addrs[$i]}:443 ssl; server_name ${names[$i]};"
    echo "    location / { return 200 \"${names[$i]} ok\\n\"; } }"
  done
  echo "}"
} >"$S/nginx.conf"
nginx -c "$S/nginx.conf"
dns_args=()
for i in "${!names[@]}"; do dns_args+=("--host-record=${names[$i]},${addrs[$i]}"); done
dnsmasq --no-resolv --no-hosts --bind-interfaces --listen-address=203.0.113.53 --user=root \
  --cache-size=0 "${dns_args[@]}"
printf 'Port 2222\nListenAddress 203.0.113.22\nHostKey %s/ssh_host_ed25519_key\nUsePAM no\nPasswordAuthentication no\nPubkeyAuthentication no\n' \
  "$S" >"$S/sshd_config"
/usr/sbin/sshd -f "$S/sshd_config"
iperf3 -s -B 203.0.113.5 -p 5201 -D
exec natfw lab udp-echo --bind 203.0.113.7:7
