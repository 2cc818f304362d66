#!/usr/bin/env python3
"""Fill in the IPv4 header and TCP/UDP checksums of a pcap's frames, in place.

A capture taken on the sending side of a veth with checksum offload on holds partial
checksums (the NIC would complete them); the frames are otherwise exactly what was sent.
capture_protocols.sh turns the offload off, so its captures do not need this; it is kept for
captures made before that (Ethernet + IPv4 only; other frames are left as they are).
Usage: fill_checksums.py FILE.pcap...
"""
import struct
import sys


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def fix(frame: bytearray) -> None:
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return
    ip = 14
    ihl = (frame[ip] & 15) * 4
    total = struct.unpack("!H", frame[ip + 2 : ip + 4])[0]
    if frame[ip] >> 4 != 4 or ihl < 20 or ip + total > len(frame):
        return
    frame[ip + 10 : ip + 12] = b"\0\0"
    frame[ip + 10 : ip + 12] = struct.pack("!H", csum(bytes(frame[ip : ip + ihl])))
    frag = struct.unpack("!H", frame[ip + 6 : ip + 8])[0]
    if frag & 0x3FFF:
        return  # a fragment: the L4 checksum covers the whole datagram
    proto = frame[ip + 9]
    l4 = ip + ihl
    seg = bytes(frame[l4 : ip + total])
    off = {6: 16, 17: 6}.get(proto)
    if off is None or len(seg) < off + 2:
        return
    pseudo = frame[ip + 12 : ip + 20] + struct.pack("!BBH", 0, proto, len(seg))
    seg = seg[:off] + b"\0\0" + seg[off + 2 :]
    c = csum(bytes(pseudo) + seg)
    if proto == 17 and c == 0:
        c = 0xFFFF
    frame[l4 + off : l4 + off + 2] = struct.pack("!H", c)


def main() -> None:
    for path in sys.argv[1:]:
        data = bytearray(open(path, "rb").read())
        magic = struct.unpack("<I", data[:4])[0]
        if magic not in (0xA1B2C3D4, 0xA1B23C4D):
            sys.exit(f"{path}: not a little-endian pcap")
        pos = 24
        while pos + 16 <= len(data):
            incl = struct.unpack("<I", data[pos + 8 : pos + 12])[0]
            frame = data[pos + 16 : pos + 16 + incl]
            fix(frame)
            data[pos + 16 : pos + 16 + incl] = frame
            pos += 16 + incl
        open(path, "wb").write(data)


if __name__ == "__main__":
    main()
