//! Payload detectors for the applications of the appliance's list beyond the web and mail
//! protocols: NTP, Memcache, MQTT, PostgreSQL, MongoDB, VNC, SIP and SMB.
//!
//! Each looks at the first bytes one side sent and answers yes, no or "could still be" (see
//! `classify`). They check structure (fixed magic, lengths that agree, fields in range), not
//! ports, and every one is tested against every other one's samples.

use natfw_policy::App;

use super::classify::Verdict::{self, Maybe, No, Yes};

/// NTP (RFC 5905) packet of `mode` (3 client, 4 server; 1/2 symmetric for peers): a 48-byte
/// header (extension fields or a MAC may follow, in 4-byte words), version 1–4, and a stratum
/// that makes sense for the mode (a client sends 0–15, a server answers 0 = kiss-o'-death to
/// 16 = unsynchronised), poll interval at most 2^17 s.
pub fn ntp(d: &[u8], mode: u8) -> bool {
    let [b0, stratum, poll, ..] = d else {
        return false;
    };
    let version = (b0 >> 3) & 7;
    let max_stratum = if mode == 4 { 16 } else { 15 };
    (48..=1024).contains(&d.len())
        && d.len().is_multiple_of(4)
        && (1..=4).contains(&version)
        && b0 & 7 == mode
        && *stratum <= max_stratum
        && *poll <= 17
}

/// Memcache, text protocol (a known lowercase command with well-formed arguments, the line
/// ended by CRLF) or binary protocol (request magic 0x80, a 24-byte header whose lengths agree).
pub fn memcache(client: &[u8]) -> Verdict {
    if client.first() == Some(&0x80) {
        return memcache_binary(client);
    }
    let Some(first) = client.first() else {
        return No;
    };
    if !first.is_ascii_lowercase() {
        return No;
    }
    let Some(end) = client.iter().position(|&b| b == b'\n') else {
        return if client.len() < 256 && client.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            memcache_word_prefix(client)
        } else {
            No
        };
    };
    let Some(line) = client[..end].strip_suffix(b"\r") else {
        return No;
    };
    let mut words = line.split(|&b| b == b' ');
    let cmd = words.next().unwrap_or_default();
    let args: Vec<&[u8]> = words.collect();
    let key_ok = |k: &[u8]| (1..=250).contains(&k.len()) && k.iter().all(u8::is_ascii_graphic);
    let num = |n: &[u8]| !n.is_empty() && n.len() <= 20 && n.iter().all(u8::is_ascii_digit);
    let ok = match cmd {
        b"get" | b"gets" => !args.is_empty() && args.iter().all(|k| key_ok(k)),
        b"gat" | b"gats" => args.len() >= 2 && num(args[0]) && args[1..].iter().all(|k| key_ok(k)),
        // set <key> <flags> <exptime> <bytes> [noreply]
        b"set" | b"add" | b"replace" | b"append" | b"prepend" => {
            (4..=5).contains(&args.len())
                && key_ok(args[0])
                && args[1..4].iter().all(|n| num(n))
                && args.get(4).is_none_or(|n| *n == b"noreply")
        }
        b"cas" => {
            (5..=6).contains(&args.len())
                && key_ok(args[0])
                && args[1..5].iter().all(|n| num(n))
                && args.get(5).is_none_or(|n| *n == b"noreply")
        }
        b"delete" => {
            (1..=2).contains(&args.len())
                && key_ok(args[0])
                && args.get(1).is_none_or(|n| *n == b"noreply")
        }
        b"incr" | b"decr" | b"touch" => {
            (2..=3).contains(&args.len())
                && key_ok(args[0])
                && num(args[1])
                && args.get(2).is_none_or(|n| *n == b"noreply")
        }
        b"stats" => args.len() <= 2 && args.iter().all(|a| a.iter().all(u8::is_ascii_graphic)),
        b"version" | b"quit" | b"mn" => args.is_empty(),
        b"flush_all" | b"verbosity" => {
            args.len() <= 2 && args.iter().all(|n| num(n) || *n == b"noreply")
        }
        // Meta commands: mg/ms/md/ma <key> <flags>*
        b"mg" | b"ms" | b"md" | b"ma" => !args.is_empty() && key_ok(args[0]),
        _ => false,
    };
    if ok {
        Yes(App::Memcache)
    } else {
        No
    }
}

const MEMCACHE_WORDS: [&[u8]; 24] = [
    b"get ",
    b"gets ",
    b"gat ",
    b"gats ",
    b"set ",
    b"add ",
    b"replace ",
    b"append ",
    b"prepend ",
    b"cas ",
    b"delete ",
    b"incr ",
    b"decr ",
    b"touch ",
    b"stats",
    b"version",
    b"quit",
    b"flush_all",
    b"verbosity ",
    b"mg ",
    b"ms ",
    b"md ",
    b"ma ",
    b"mn",
];

/// An unfinished line: could it still become a memcache command?
fn memcache_word_prefix(c: &[u8]) -> Verdict {
    let could = MEMCACHE_WORDS.iter().any(|w| {
        let n = c.len().min(w.len());
        c[..n] == w[..n]
    });
    if could {
        Maybe
    } else {
        No
    }
}

fn memcache_binary(c: &[u8]) -> Verdict {
    let Some(h) = c.get(..24) else {
        return Maybe;
    };
    let opcode = h[1];
    let key_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let extras = usize::from(h[4]);
    let data_type = h[5];
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if opcode <= 0x48 && data_type == 0 && key_len + extras <= body && body <= 1 << 20 {
        Yes(App::Memcache)
    } else {
        No
    }
}

/// MQTT CONNECT: packet type 1 with flags 0, a remaining length (1–4 byte varint) that covers
/// the variable header, protocol name `MQTT` (3.1.1/5: level 4 or 5) or `MQIsdp` (3.1: level
/// 3), reserved connect flag clear.
pub fn mqtt(client: &[u8]) -> Verdict {
    let Some((&b0, rest)) = client.split_first() else {
        return No;
    };
    if b0 != 0x10 {
        return No;
    }
    // Remaining length varint.
    let mut len: usize = 0;
    let mut i = 0;
    loop {
        let Some(&b) = rest.get(i) else {
            return Maybe;
        };
        len |= usize::from(b & 0x7f) << (7 * i);
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i == 4 {
            return No;
        }
    }
    let vh = &rest[i..];
    if len < 10 {
        return No;
    }
    let check = |name: &[u8], levels: &[u8]| -> Verdict {
        let mut want = vec![0, name.len() as u8];
        want.extend_from_slice(name);
        let n = vh.len().min(want.len());
        if vh[..n] != want[..n] {
            return No;
        }
        match vh.get(want.len()..want.len() + 2) {
            Some([level, flags]) if levels.contains(level) && flags & 1 == 0 => Yes(App::Mqtt),
            Some(_) => No,
            None => Maybe,
        }
    };
    match (check(b"MQTT", &[4, 5]), check(b"MQIsdp", &[3])) {
        (Yes(a), _) | (_, Yes(a)) => Yes(a),
        (Maybe, _) | (_, Maybe) => Maybe,
        _ => No,
    }
}

/// PostgreSQL frontend's first message: SSLRequest / GSSENCRequest (length 8 and a magic code),
/// CancelRequest (length 16), or a protocol 3.0 StartupMessage whose parameters start with a
/// printable name.
pub fn postgres(client: &[u8]) -> Verdict {
    let Some(h) = client.get(..8) else {
        // Lengths start with two zero bytes (messages are far below 64 KiB).
        return if client.iter().take(2).all(|&b| b == 0) && !client.is_empty() {
            Maybe
        } else {
            No
        };
    };
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let code = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    const SSL: u32 = 80_877_103;
    const GSSENC: u32 = 80_877_104;
    const CANCEL: u32 = 80_877_102;
    const V3: u32 = 3 << 16;
    match (len, code) {
        (8, SSL | GSSENC) | (16, CANCEL) => Yes(App::PostgreSql),
        (9..=10_000, V3) => match client.get(8) {
            Some(b) if b.is_ascii_lowercase() || *b == b'_' => Yes(App::PostgreSql),
            Some(_) => No,
            None => Maybe,
        },
        _ => No,
    }
}

/// MongoDB wire protocol request: a 16-byte header (little-endian length 21 B–48 MB, responseTo
/// 0) with opcode OP_MSG (2013: flag bits only 0, 1 and 16, then a section of kind 0 or 1),
/// OP_QUERY (2004, legacy `hello`/`isMaster`) or OP_COMPRESSED (2012).
pub fn mongodb(client: &[u8]) -> Verdict {
    let Some(h) = client.get(..16) else {
        // The length is little-endian and small: byte 3 is 0 for anything under 16 MB.
        return match client.get(3) {
            Some(0) | None if !client.is_empty() => Maybe,
            _ => No,
        };
    };
    let le = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let (len, response_to, opcode) = (le(0), le(8), le(12));
    if !(21..=48_000_000).contains(&len) || response_to != 0 {
        return No;
    }
    match opcode {
        2013 => {
            let Some(b) = client.get(16..21) else {
                return Maybe;
            };
            let flags = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if flags & !0x1_0003 == 0 && b[4] <= 1 {
                Yes(App::MongoDb)
            } else {
                No
            }
        }
        2004 | 2012 => Yes(App::MongoDb),
        _ => No,
    }
}

/// VNC: the RFB protocol version banner, `RFB xxx.yyy\n`, which the server sends first (the
/// client echoes a version back).
pub fn vnc(data: &[u8]) -> Verdict {
    const SHAPE: &[u8; 12] = b"RFB 000.000\n";
    for (i, &b) in data.iter().take(12).enumerate() {
        let ok = match SHAPE[i] {
            b'0' => b.is_ascii_digit(),
            s => b == s,
        };
        if !ok {
            return No;
        }
    }
    if data.len() >= 12 {
        Yes(App::Vnc)
    } else {
        Maybe
    }
}

const SIP_METHODS: [&[u8]; 14] = [
    b"INVITE",
    b"REGISTER",
    b"OPTIONS",
    b"ACK",
    b"BYE",
    b"CANCEL",
    b"SUBSCRIBE",
    b"NOTIFY",
    b"MESSAGE",
    b"INFO",
    b"PRACK",
    b"UPDATE",
    b"REFER",
    b"PUBLISH",
];

/// SIP (RFC 3261) request line, `METHOD sip:uri SIP/2.0` (sips: and tel: URIs too), or a status
/// line `SIP/2.0 NNN` from the server.
pub fn sip(data: &[u8]) -> Verdict {
    let line_end = data.iter().position(|&b| b == b'\n');
    let line = match line_end {
        Some(e) => data[..e].strip_suffix(b"\r").unwrap_or(&data[..e]),
        None => data,
    };
    if line.len() > 1024 {
        return No;
    }
    if let Some(rest) = line.strip_prefix(b"SIP/2.0 ") {
        let code_ok = rest.len() >= 3 && rest[..3].iter().all(u8::is_ascii_digit);
        return match (code_ok, line_end) {
            (true, Some(_)) => Yes(App::Sip),
            (true, None) => Maybe,
            _ => No,
        };
    }
    let mut words = line.split(|&b| b == b' ');
    let method = words.next().unwrap_or_default();
    if line_end.is_none() {
        // Unfinished: a method (or its prefix) so far.
        let could = SIP_METHODS.iter().any(|m| {
            let n = method.len().min(m.len());
            method[..n] == m[..n]
        }) || b"SIP/2.0 ".starts_with(&line[..line.len().min(8)]);
        return if could && !line.is_empty() { Maybe } else { No };
    }
    let uri = words.next().unwrap_or_default();
    let version = words.next().unwrap_or_default();
    let scheme_ok = [&b"sip:"[..], b"sips:", b"tel:"]
        .iter()
        .any(|s| uri.len() > s.len() && uri[..s.len()].eq_ignore_ascii_case(s));
    if SIP_METHODS.contains(&method) && scheme_ok && version == b"SIP/2.0" && words.next().is_none()
    {
        Yes(App::Sip)
    } else {
        No
    }
}

/// SMB over TCP: a NetBIOS session message (type 0, 24-bit length) carrying an SMB2 (`\xfeSMB`)
/// or SMB1 (`\xffSMB`) header, 64 / 32 bytes of it at least.
pub fn smb(client: &[u8]) -> Verdict {
    let [0, l0, l1, l2, rest @ ..] = client else {
        return if client.first().is_none_or(|&b| b == 0) && !client.is_empty() {
            Maybe
        } else {
            No
        };
    };
    let len = usize::from(*l0) << 16 | usize::from(*l1) << 8 | usize::from(*l2);
    let n = rest.len().min(4);
    let magic_ok = rest[..n] == b"\xfeSMB"[..n] || rest[..n] == b"\xffSMB"[..n];
    if !magic_ok {
        return No;
    }
    let min = if rest.first() == Some(&0xfe) { 64 } else { 32 };
    if len < min {
        return No;
    }
    if n == 4 {
        Yes(App::Smb)
    } else {
        Maybe
    }
}
