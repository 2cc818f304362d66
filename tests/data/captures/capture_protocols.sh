#!/bin/bash
# Re-creates the protocol captures of this directory (run as root): real clients in a "client"
# network namespace (10.0.1.10) talking to real servers (for MongoDB, which Debian does not
# package, a wire-protocol test server) in a "server" namespace holding the lab addresses,
# joined by a veth pair.
# tcpdump records on the client's side, i.e. the inside view `natfw replay` expects.
#
# Usage: capture_protocols.sh [OUTDIR] [CASE...]   (default: this directory, every case)
# Debian packages: exim4-daemon-light dovecot-imapd dovecot-pop3d vsftpd nginx dnsmasq dnsutils chrony ntpsec-ntpdate memcached libmemcached-tools mosquitto
# mosquitto-clients postgresql (server + psql) python3-pymongo freerdp2-x11 apache2 nghttp2-client
# xrdp tigervnc-standalone-server vncsnapshot sip-tester samba smbclient mariadb-server mariadb-client
# redis-server redis-tools curl openssl tcpdump; for MongoDB a Python with pymongo>=4
# and mockupdb from PyPI ($MONGO_PY, see the MongoDB case).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(cd "${1:-$HERE}" && pwd)
shift || true
CASES=("$@")
W=$(mktemp -d /tmp/natfw-cap.XXXXXX)
chmod 755 "$W"
C=natfwcap-c
S=natfwcap-s
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    ip netns del $C 2>/dev/null || true
    ip netns del $S 2>/dev/null || true
    rm -rf "/etc/netns/$C" "$W"
}
trap cleanup EXIT

want() {
    [ ${#CASES[@]} -eq 0 ] && return 0
    local c
    for c in "${CASES[@]}"; do [ "$c" = "$1" ] && return 0; done
    return 1
}

# Server addresses (all in the server namespace).
SMTP=203.0.113.25 IMAP=203.0.113.143 POP3=203.0.113.110 FTP=203.0.113.21
H2=198.51.100.80 DNS=198.51.100.53 EDGE1=203.0.113.60 EDGE2=203.0.113.61
NTP=203.0.113.123 MEMC=203.0.113.11 MQTT=203.0.113.18 PG=203.0.113.54 MONGO=203.0.113.27
RDP=203.0.113.33 VNC=203.0.113.59 SIP=203.0.113.50 SMB=203.0.113.45
MYSQL=203.0.113.36 REDIS=203.0.113.63

ip netns add $C
ip netns add $S
ip link add natfwcap0 netns $C type veth peer name natfwcap1 netns $S
ip -n $C addr add 10.0.1.10/24 dev natfwcap0
ip -n $C link set natfwcap0 up
ip -n $C link set lo up
ip -n $S link set natfwcap1 up
ip -n $S link set lo up
ip -n $C route add default dev natfwcap0
ip -n $S route add 10.0.1.0/24 dev natfwcap1
for a in $SMTP $IMAP $POP3 $FTP $H2 $DNS $EDGE1 $EDGE2 $NTP $MEMC $MQTT $PG $MONGO $RDP $VNC $SIP $SMB $MYSQL $REDIS; do
    ip -n $S addr add $a/32 dev natfwcap1
done
# No offloads: tcpdump should see wire-sized segments with their checksums filled in.
ip netns exec $C ethtool -K natfwcap0 tx off tso off gso off gro off >/dev/null 2>&1 || true
ip netns exec $S ethtool -K natfwcap1 tx off tso off gso off gro off >/dev/null 2>&1 || true

sx() { ip netns exec $S "$@"; }
cx() { ip netns exec $C "$@"; }
bg_server() {
    ip netns exec $S "$@" >>"$W/servers.log" 2>&1 &
    PIDS+=($!)
}
wait_port() { # proto addr port
    for _ in $(seq 50); do
        if sx ss -H -ln"${1:0:1}" | grep -q "$2:$3 "; then return 0; fi
        sleep 0.1
    done
    echo "server on $2:$3 did not come up" >&2
    tail -20 "$W/servers.log" >&2
    return 1
}
# cap NAME FILTER -- client command...
cap() {
    local name=$1 filter=$2
    shift 3
    cx tcpdump -i natfwcap0 -U -s 0 -w "$W/$name.pcap" "$filter" 2>/dev/null &
    local dump=$!
    sleep 0.7
    cx "$@" </dev/null >"$W/$name.client.log" 2>&1 || {
        echo "($name: client exited $?)"
        tail -3 "$W/$name.client.log"
    }
    sleep 0.7
    kill "$dump"
    wait "$dump" 2>/dev/null || true
    cp "$W/$name.pcap" "$OUT/$name.pcap"
    echo "$name: $(tcpdump -r "$OUT/$name.pcap" 2>/dev/null | wc -l) packets"
}

# A certificate for every TLS server (names are in the SNI, not checked by the clients: -k).
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=lab.example.test \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
chmod 644 "$W/key.pem" "$W/cert.pem"
printf 'Subject: natfw capture\r\n\r\nhello\r\n' >"$W/msg.txt"

# ---------------------------------------------------------------- SMTP STARTTLS (exim)
if want smtp_starttls; then
    mkdir -p "$W/exim/spool" "$W/exim/log"
    chown -R Debian-exim: "$W/exim"
    cat >"$W/exim.conf" <<EOF
primary_hostname = mx.example.test
daemon_smtp_ports = 25 : 2525
local_interfaces = $SMTP
spool_directory = $W/exim/spool
log_file_path = $W/exim/log/%slog
host_lookup =
rfc1413_hosts =
tls_advertise_hosts = *
tls_certificate = $W/cert.pem
tls_privatekey = $W/key.pem
acl_smtp_rcpt = acl_rcpt
begin acl
acl_rcpt:
  accept
begin routers
blackhole:
  driver = redirect
  data = :blackhole:
EOF
    bg_server exim -C "$W/exim.conf" -bdf
    wait_port tcp $SMTP 25
    # curl on port 25, openssl s_client on 2525 ("any port").
    cap smtp_starttls "host $SMTP" -- sh -c "
        curl -sS --ssl-reqd -k --resolve mx.example.test:25:$SMTP smtp://mx.example.test:25 \
            --mail-from a@client.example.test --mail-rcpt b@example.test -T $W/msg.txt
        printf 'QUIT\r\n' | timeout 5 openssl s_client -quiet -starttls smtp \
            -servername relay.example.test -connect $SMTP:2525 2>/dev/null"
fi

# ---------------------------------------------------------------- IMAP / POP3 STARTTLS (dovecot)
if want imap_starttls || want pop3_stls; then
    mkdir -p "$W/dovecot/run" "$W/dovecot/home"
    chmod 777 "$W/dovecot/home"
    cat >"$W/dovecot.conf" <<EOF
protocols = imap pop3
listen = $IMAP, $POP3
base_dir = $W/dovecot/run
log_path = $W/dovecot/log
ssl = yes
ssl_cert = <$W/cert.pem
ssl_key = <$W/key.pem
auth_mechanisms = plain
disable_plaintext_auth = yes
passdb {
  driver = static
  args = password=pass
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$W/dovecot/home/%u
}
mail_location = maildir:$W/dovecot/home/%u/Maildir
EOF
    bg_server dovecot -F -c "$W/dovecot.conf"
    wait_port tcp $IMAP 143
    want imap_starttls && cap imap_starttls "host $IMAP" -- \
        curl -sS --ssl-reqd -k --resolve imap.example.test:143:$IMAP -u user:pass \
        "imap://imap.example.test/INBOX"
    want pop3_stls && cap pop3_stls "host $POP3" -- \
        curl -sS --ssl-reqd -k --resolve pop.example.test:110:$POP3 -u user:pass \
        "pop3://pop.example.test/"
fi

# ---------------------------------------------------------------- FTP AUTH TLS (vsftpd)
if want ftp_auth_tls; then
    mkdir -p "$W/ftp-empty" "$W/ftp-root"
    cat >"$W/vsftpd.conf" <<EOF
listen=YES
listen_address=$FTP
background=NO
anonymous_enable=YES
anon_root=$W/ftp-root
local_enable=NO
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
require_ssl_reuse=NO
rsa_cert_file=$W/cert.pem
rsa_private_key_file=$W/key.pem
secure_chroot_dir=$W/ftp-empty
pasv_address=$FTP
seccomp_sandbox=NO
EOF
    bg_server vsftpd "$W/vsftpd.conf"
    wait_port tcp $FTP 21
    # The control connection is the one identified (the data connection is TLS without a
    # negotiation of its own).
    cap ftp_auth_tls "host $FTP and port 21" -- \
        curl -sS --ssl-reqd -k --resolve ftp.example.test:21:$FTP -u anonymous:a@b \
        "ftp://ftp.example.test/"
fi

# ---------------------------------------------------------------- HTTP/2 cleartext (nginx, apache)
if want h2c_prior_knowledge || want h2c_upgrade; then
    mkdir -p "$W/www"
    echo hello >"$W/www/index.html"
    cat >"$W/nginx.conf" <<EOF
daemon off;
pid $W/nginx.pid;
error_log $W/nginx.err;
events {}
http {
  access_log off;
  server {
    listen $H2:80 http2;
    root $W/www;
  }
  server {
    listen $EDGE1:80;
    listen $EDGE2:80;
    root $W/www;
  }
}
EOF
    bg_server nginx -c "$W/nginx.conf"
    wait_port tcp $H2 80
    # nginx speaks h2c only with prior knowledge; Apache's mod_http2 takes the Upgrade.
    mkdir -p "$W/apache-run"
    chown www-data: "$W/apache-run"
    M=/usr/lib/apache2/modules
    cat >"$W/apache.conf" <<EOF
LoadModule mpm_event_module $M/mod_mpm_event.so
LoadModule authz_core_module $M/mod_authz_core.so
LoadModule http2_module $M/mod_http2.so
ServerName up.example.test
Listen $H2:8080
User www-data
Group www-data
PidFile $W/apache-run/apache.pid
DefaultRuntimeDir $W/apache-run
Mutex file:$W/apache-run
ErrorLog $W/apache-run/error.log
DocumentRoot $W/www
<Directory $W/www>
  Require all granted
</Directory>
Protocols h2c http/1.1
EOF
    bg_server apache2 -f "$W/apache.conf" -DFOREGROUND
    wait_port tcp $H2 8080
    want h2c_prior_knowledge && cap h2c_prior_knowledge "host $H2" -- \
        curl -sS --http2-prior-knowledge --resolve h2.example.test:80:$H2 \
        http://h2.example.test/index.html
    # Two real clients of the Upgrade: curl --http2 and nghttp -u (nghttp has no --resolve: the
    # name comes from the client namespace's hosts file, /etc/netns/$C/hosts).
    mkdir -p /etc/netns/$C
    echo "$H2 up.example.test" >/etc/netns/$C/hosts
    want h2c_upgrade && cap h2c_upgrade "host $H2 and port 8080" -- sh -c "
        curl -sS --http2 --resolve up.example.test:8080:$H2 http://up.example.test:8080/index.html
        nghttp -u http://up.example.test:8080/index.html"
fi

# ---------------------------------------------------------------- DNS: TCP, CNAME chains (dnsmasq)
if want dns_tcp_cname || want dns_cname_asked; then
    cat >"$W/dnsmasq.conf" <<EOF
no-resolv
no-hosts
listen-address=$DNS
bind-interfaces
host-record=edge.cdn.example.test,$EDGE1
host-record=edge.cdn.example.test,$EDGE2
cname=shop.cdn.example.test,edge.cdn.example.test
cname=www.shop.example.test,shop.cdn.example.test
EOF
    [ -f "$W/nginx.pid" ] || {
        mkdir -p "$W/www"
        echo hello >"$W/www/index.html"
        cat >"$W/nginx.conf" <<EOF
daemon off;
pid $W/nginx.pid;
error_log $W/nginx.err;
events {}
http { access_log off; server { listen $EDGE1:80; listen $EDGE2:80; root $W/www; } }
EOF
        bg_server nginx -c "$W/nginx.conf"
    }
    bg_server dnsmasq -k -C "$W/dnsmasq.conf" --user=root
    wait_port udp $DNS 53
    wait_port tcp $EDGE1 80
    # The client asks over TCP, then connects to an address of the answer by IP (no Host name).
    want dns_tcp_cname && cap dns_tcp_cname "host $DNS or host $EDGE1 or host $EDGE2" -- sh -c "
        dig +tcp +nocookie @$DNS www.shop.example.test A
        curl -sS http://$EDGE2/index.html"
    # Over UDP the same chain; the later flow is named by what was asked.
    want dns_cname_asked && cap dns_cname_asked "host $DNS or host $EDGE1 or host $EDGE2" -- sh -c "
        dig +nocookie @$DNS www.shop.example.test A
        curl -sS http://$EDGE1/index.html"
fi

# ---------------------------------------------------------------- NTP (chrony server; ntpdig, chronyd clients)
if want ntp; then
    cat >"$W/chrony.conf" <<EOF
bindaddress $NTP
port 123
cmdport 0
allow all
local stratum 8
pidfile $W/chronyd.pid
driftfile $W/chrony.drift
EOF
    bg_server chronyd -d -x -f "$W/chrony.conf"
    wait_port udp $NTP 123
    cap ntp "host $NTP" -- sh -c "
        ntpdig -t 2 $NTP
        printf 'server $NTP iburst maxsamples 1\npidfile $W/chronyc.pid\ncmdport 0\n' > $W/chrony-client.conf
        timeout 10 chronyd -Q -x -t 8 -f $W/chrony-client.conf"
fi

# ---------------------------------------------------------------- Memcache (memcached; text and binary)
if want memcache; then
    bg_server memcached -u nobody -l $MEMC -p 11211 -B auto
    wait_port tcp $MEMC 11211
    cap memcache "host $MEMC" -- sh -c "
        memcstat --servers=$MEMC:11211 >/dev/null
        memcstat --binary --servers=$MEMC:11211 >/dev/null"
fi

# ---------------------------------------------------------------- MQTT (mosquitto)
if want mqtt; then
    printf 'listener 1883 %s\nallow_anonymous true\n' $MQTT >"$W/mosquitto.conf"
    bg_server mosquitto -c "$W/mosquitto.conf"
    wait_port tcp $MQTT 1883
    cap mqtt "host $MQTT" -- sh -c "
        mosquitto_pub -h $MQTT -t natfw/test -m hello -V mqttv311
        mosquitto_pub -h $MQTT -t natfw/test -m hello -V mqttv5"
fi

# ---------------------------------------------------------------- PostgreSQL (postgres, psql)
if want postgres; then
    mkdir -p "$W/pg"
    chown postgres: "$W/pg"
    pgrun() { setpriv --reuid postgres --regid postgres --init-groups "$@"; }
    pgrun initdb -D "$W/pg/data" -A trust -U postgres >/dev/null
    echo "host all all 10.0.0.0/8 trust" >>"$W/pg/data/pg_hba.conf"
    bg_server setpriv --reuid postgres --regid postgres --init-groups \
        postgres -D "$W/pg/data" -k "$W/pg" -c listen_addresses=$PG
    wait_port tcp $PG 5432
    # sslmode=prefer: SSLRequest first (refused: no certificate), then the StartupMessage.
    cap postgres "host $PG" -- sh -c "
        PGCONNECT_TIMEOUT=5 psql 'host=$PG user=postgres dbname=postgres sslmode=prefer' -c 'select 1'
        PGCONNECT_TIMEOUT=5 psql 'host=$PG user=postgres dbname=postgres sslmode=disable' -c 'select 1'"
fi

# ---------------------------------------------------------------- MySQL (MariaDB), Redis
if want mysql; then
    mkdir -p "$W/mysql"
    chown mysql: "$W/mysql"
    mariadb-install-db --user=mysql --datadir="$W/mysql/data" --auth-root-authentication-method=normal \
        --skip-test-db >/dev/null
    bg_server mariadbd --no-defaults --user=mysql --datadir="$W/mysql/data" --bind-address=$MYSQL \
        --port=3306 --socket="$W/mysql/sock" --pid-file="$W/mysql/pid" --skip-grant-tables
    wait_port tcp $MYSQL 3306
    # The server speaks first (its handshake packet); the client logs in and runs a query.
    cap mysql "host $MYSQL" -- mariadb --no-defaults -h $MYSQL -P 3306 -u root --skip-ssl -e 'select 1'
fi
if want redis; then
    bg_server redis-server --bind $REDIS --port 6379 --save '' --appendonly no --protected-mode no
    wait_port tcp $REDIS 6379
    # RESP arrays (redis-cli), then an inline PING (the form telnet users type), from bash.
    cap redis "host $REDIS" -- bash -c "
        redis-cli -h $REDIS set natfw capture
        redis-cli -h $REDIS get natfw
        exec 3<>/dev/tcp/$REDIS/6379; printf 'PING\r\n' >&3; timeout 3 head -c 7 <&3"
fi

# ---------------------------------------------------------------- MongoDB (pymongo; MockupDB)
if want mongodb; then
    # No MongoDB server is packaged for Debian (its licence keeps it out). The clients are real:
    # PyMongo 4 from PyPI (OP_MSG `hello` with a declared server API, then OP_MSG `ismaster`
    # without one) and Debian's PyMongo 3.11 (the legacy OP_QUERY `isMaster`). The server is
    # MockupDB (PyPI, the PyMongo team's wire-protocol test server) answering the handshake and
    # `ping`: real framing and BSON, not a database. $MONGO_PY is a Python with pymongo>=4 and
    # mockupdb, e.g. `python3 -m venv V && V/bin/pip install 'pymongo>=4' mockupdb`.
    MONGO_PY=${MONGO_PY:-python3}
    cat >"$W/mongo_server.py" <<EOF
import time, mockupdb
s = mockupdb.MockupDB(port=27017)
s._address = ("$MONGO", 27017)  # MockupDB binds to localhost; no option for the address
s.run()
hello = dict(isWritablePrimary=True, ismaster=True, helloOk=True, maxWireVersion=17,
             minWireVersion=0, maxBsonObjectSize=16777216, maxMessageSizeBytes=48000000,
             maxWriteBatchSize=100000, ok=1)
for name in ("hello", "ismaster", "isMaster"):
    s.autoresponds(name, **hello)
s.autoresponds("ping", ok=1)
while True:
    time.sleep(60)
EOF
    bg_server "$MONGO_PY" "$W/mongo_server.py"
    wait_port tcp $MONGO 27017
    cat >"$W/mongo_client.py" <<EOF
import pymongo
apis = [None]
if pymongo.version_tuple >= (4,):
    from pymongo.server_api import ServerApi
    apis = [ServerApi("1"), None]
for api in apis:
    kw = {"server_api": api} if api else {}
    c = pymongo.MongoClient("$MONGO", 27017, serverSelectionTimeoutMS=3000,
                            directConnection=True, **kw)
    print(pymongo.version, api and api.version, c.admin.command("ping"))
    c.close()
EOF
    cap mongodb "host $MONGO" -- sh -c "
        $MONGO_PY $W/mongo_client.py
        /usr/bin/python3 $W/mongo_client.py"
fi

# ---------------------------------------------------------------- RDP (xrdp, xfreerdp)
if want rdp; then
    # xrdp answers the X.224 Connection Request and the TLS security layer; no desktop session
    # is needed for that (+auth-only stops the client after it). The client gets a display from
    # Xvnc.
    mkdir -p /run/xrdp/sockdir
    sed -e "s|^port=3389|port=tcp://$RDP:3389|" /etc/xrdp/xrdp.ini >"$W/xrdp.ini"
    bg_server xrdp --nodaemon --config "$W/xrdp.ini"
    wait_port tcp $RDP 3389
    Xvnc :77 -SecurityTypes None -localhost -rfbport 5977 >/dev/null 2>&1 &
    PIDS+=($!)
    sleep 1
    cap rdp "host $RDP" -- env DISPLAY=:77 timeout 10 xfreerdp /v:$RDP /u:user /p:pass /cert:ignore +auth-only
fi

# ---------------------------------------------------------------- VNC (Xvnc, vncsnapshot)
if want vnc; then
    bg_server Xvnc :78 -SecurityTypes None -interface $VNC -rfbport 5900 -geometry 320x200
    wait_port tcp $VNC 5900
    cap vnc "host $VNC" -- timeout 10 vncsnapshot -quiet $VNC:0 "$W/shot.jpg"
fi

# ---------------------------------------------------------------- SIP (sipp UAS and UAC, UDP and TCP)
if want sip; then
    bg_server sh -c "cd $W && exec sipp -sn uas -i $SIP -p 5060 -nostdin"
    bg_server sh -c "cd $W && exec sipp -sn uas -t t1 -i $SIP -p 5060 -nostdin"
    wait_port udp $SIP 5060
    wait_port tcp $SIP 5060
    cap sip "host $SIP" -- sh -c "
        cd $W && timeout 10 sipp -sn uac -i 10.0.1.10 -p 5070 -m 1 -nostdin $SIP:5060 >/dev/null
        cd $W && timeout 10 sipp -sn uac -t t1 -i 10.0.1.10 -p 5071 -m 1 -nostdin $SIP:5060 >/dev/null"
fi

# ---------------------------------------------------------------- SMB (samba, smbclient)
if want smb; then
    mkdir -p "$W/smb/share" "$W/smb/state" "$W/smb/run" "$W/smb/log"
    cat >"$W/smb.conf" <<EOF
[global]
interfaces = $SMB/32
bind interfaces only = yes
smb ports = 445
disable netbios = yes
server role = standalone server
map to guest = Bad User
state directory = $W/smb/state
cache directory = $W/smb/state
lock directory = $W/smb/state
private dir = $W/smb/state
pid directory = $W/smb/run
log file = $W/smb/log/%m
[share]
path = $W/smb/share
guest ok = yes
EOF
    bg_server smbd -F --no-process-group -s "$W/smb.conf"
    wait_port tcp $SMB 445
    cap smb "host $SMB" -- timeout 10 smbclient -N -L //$SMB -s "$W/smb.conf"
fi
echo "captures in $OUT"
