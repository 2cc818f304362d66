//! STARTTLS: the plaintext exchange of SMTP (`STARTTLS`), IMAP (`STARTTLS`), POP3 (`STLS`) and
//! FTP (`AUTH TLS`) up to the TLS ClientHello that follows the server's go-ahead.
//!
//! [`phase`] reads both directions from their start (client stream, server stream) and says
//! where the session is: still negotiating in plaintext (and how many client bytes are
//! negotiation commands that may pass while the verdict waits for the name), upgraded (the
//! offset where the client's TLS begins), or not upgrading at all (no name is coming).
//!
//! Only commands that belong before an upgrade may pass while waiting (SMTP `EHLO`/`HELO`/
//! `NOOP`/`RSET`, IMAP `CAPABILITY`/`NOOP`/`ID`, POP3 `CAPA`, FTP `FEAT`/`SYST`/`NOOP`, and the
//! upgrade command itself): anything else (`MAIL`, `LOGIN`, `USER`...) means the session goes on
//! in plaintext, which carries no name, so it is held until the verdict like any payload. Client
//! bytes after the upgrade command are never passed before the verdict: they are the
//! ClientHello and what follows it.

use natfw_policy::App;

/// Longest command or reply line accepted.
pub const MAX_LINE: usize = 1024;
/// Most client commands before the upgrade.
pub const MAX_COMMANDS: usize = 8;

/// Where a STARTTLS-capable session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Plaintext negotiation; the first `pass` client bytes are complete negotiation commands
    /// (the upgrade command included) that may be forwarded while the verdict is pending.
    Plain {
        /// Client bytes that may pass.
        pass: usize,
    },
    /// The server accepted the upgrade: the client's TLS starts at offset `tls_start` of its
    /// stream (everything before it is the plaintext negotiation).
    Upgraded {
        /// Offset of the ClientHello in the client stream.
        tls_start: usize,
    },
    /// The session will not be upgraded (refused, or the client went on in plaintext).
    NoUpgrade(&'static str),
}

/// Protocols that upgrade in-band.
pub fn supports(app: App) -> bool {
    matches!(app, App::Smtp | App::Imap | App::Pop3 | App::Ftp)
}

/// Complete lines of `data` (each without its line ending) with the offset after each; stops
/// at an unfinished line. `Err` when a line is over [`MAX_LINE`].
fn lines(data: &[u8]) -> Result<Vec<(&[u8], usize)>, &'static str> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(nl) = data[pos..].iter().position(|&b| b == b'\n') {
        if nl > MAX_LINE {
            return Err("STARTTLS: line too long");
        }
        let line = &data[pos..pos + nl];
        out.push((line.strip_suffix(b"\r").unwrap_or(line), pos + nl + 1));
        pos += nl + 1;
    }
    if data.len() - pos > MAX_LINE {
        return Err("STARTTLS: line too long");
    }
    Ok(out)
}

fn word(line: &[u8], i: usize) -> &[u8] {
    line.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .nth(i)
        .unwrap_or_default()
}

fn is(w: &[u8], want: &str) -> bool {
    w.eq_ignore_ascii_case(want.as_bytes())
}

/// SMTP/FTP replies: `ddd-text` continues, `ddd text` (or `ddd`) ends a reply. Returns the
/// codes of the complete replies, in order. FTP lets continuation lines be free text.
fn coded_replies(server: &[u8]) -> Result<Vec<u16>, &'static str> {
    let mut out = Vec::new();
    let mut open: Option<&[u8]> = None;
    for (line, _) in lines(server)? {
        let code = line.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit));
        match (open, code) {
            (Some(c), Some(lc)) if lc == c && line.get(3).is_none_or(|&b| b == b' ') => {
                open = None;
                out.push(parse_code(c));
            }
            (Some(_), _) => {}
            (None, Some(c)) => match line.get(3) {
                Some(b'-') => open = Some(c),
                None | Some(b' ') => out.push(parse_code(c)),
                Some(_) => return Err("STARTTLS: malformed reply"),
            },
            (None, None) => return Err("STARTTLS: malformed reply"),
        }
        if out.len() > MAX_COMMANDS + 1 {
            break;
        }
    }
    Ok(out)
}

fn parse_code(c: &[u8]) -> u16 {
    c.iter().fold(0, |a, d| a * 10 + u16::from(d - b'0'))
}

/// Where the session of `app` stands, from the client's stream and the server's stream, each
/// from its start. `app` other than SMTP/IMAP/POP3/FTP gives `NoUpgrade`.
pub fn phase(app: App, client: &[u8], server: &[u8]) -> Phase {
    let r = match app {
        App::Smtp => coded(
            client,
            server,
            &["EHLO", "HELO", "NOOP", "RSET"],
            "STARTTLS",
            220,
        ),
        App::Ftp => coded(client, server, &["FEAT", "SYST", "NOOP"], "AUTH", 234),
        App::Pop3 => pop3(client, server),
        App::Imap => imap(client, server),
        _ => Err("STARTTLS: not a STARTTLS protocol"),
    };
    r.unwrap_or_else(Phase::NoUpgrade)
}

/// SMTP and FTP: one reply per command, after the greeting.
fn coded(
    client: &[u8],
    server: &[u8],
    allowed: &[&str],
    upgrade: &str,
    go: u16,
) -> Result<Phase, &'static str> {
    let replies = coded_replies(server)?;
    match replies.first() {
        Some(220) | None => {}
        Some(_) => return Err("STARTTLS: server refused the session"),
    }
    let mut pass = 0;
    for (i, (line, end)) in lines(client)?.into_iter().enumerate() {
        if i >= MAX_COMMANDS {
            return Err("STARTTLS: too many commands before the upgrade");
        }
        let cmd = word(line, 0);
        if is(cmd, upgrade) {
            // FTP: AUTH TLS / AUTH SSL (RFC 4217); SMTP: a bare STARTTLS.
            let arg_ok = if upgrade == "AUTH" {
                let a = word(line, 1);
                (is(a, "TLS") || is(a, "SSL") || is(a, "TLS-C")) && word(line, 2).is_empty()
            } else {
                word(line, 1).is_empty()
            };
            if !arg_ok {
                return Err("STARTTLS: plaintext command before the upgrade");
            }
            // Reply i+1 (reply 0 is the greeting) answers this command.
            return match replies.get(i + 1) {
                None => Ok(Phase::Plain { pass: end }),
                Some(&c) if c == go => Ok(Phase::Upgraded { tls_start: end }),
                Some(_) => Err("STARTTLS: the server refused the upgrade"),
            };
        }
        if !allowed.iter().any(|a| is(cmd, a)) {
            return Err("STARTTLS: plaintext command before the upgrade");
        }
        pass = end;
    }
    Ok(Phase::Plain { pass })
}

/// POP3: `+OK`/`-ERR` replies; CAPA's positive reply is multi-line, ended by `.`.
fn pop3(client: &[u8], server: &[u8]) -> Result<Phase, &'static str> {
    let srv = lines(server)?;
    let mut s = srv.iter();
    // Greeting.
    match s.next() {
        None => {}
        Some((l, _)) if l.starts_with(b"+OK") => {}
        Some(_) => return Err("STARTTLS: server refused the session"),
    }
    let mut pass = 0;
    for (i, (line, end)) in lines(client)?.into_iter().enumerate() {
        if i >= MAX_COMMANDS {
            return Err("STARTTLS: too many commands before the upgrade");
        }
        let cmd = word(line, 0);
        let reply = s.next();
        if is(cmd, "STLS") && word(line, 1).is_empty() {
            return match reply {
                None => Ok(Phase::Plain { pass: end }),
                Some((l, _)) if l.starts_with(b"+OK") => Ok(Phase::Upgraded { tls_start: end }),
                Some(_) => Err("STARTTLS: the server refused the upgrade"),
            };
        }
        if !is(cmd, "CAPA") || !word(line, 1).is_empty() {
            return Err("STARTTLS: plaintext command before the upgrade");
        }
        if let Some((l, _)) = reply {
            if l.starts_with(b"+OK") {
                // Multi-line: up to the lone dot.
                for (l, _) in s.by_ref() {
                    if *l == b"." {
                        break;
                    }
                }
            }
        }
        pass = end;
    }
    Ok(Phase::Plain { pass })
}

/// IMAP: tagged commands; the tagged completion (`tag OK`) answers each.
fn imap(client: &[u8], server: &[u8]) -> Result<Phase, &'static str> {
    let srv = lines(server)?;
    match srv.first() {
        None => {}
        Some((l, _)) if l.starts_with(b"* OK") => {}
        Some(_) => return Err("STARTTLS: server refused the session"),
    }
    let mut pass = 0;
    for (i, (line, end)) in lines(client)?.into_iter().enumerate() {
        if i >= MAX_COMMANDS {
            return Err("STARTTLS: too many commands before the upgrade");
        }
        let tag = word(line, 0);
        let cmd = word(line, 1);
        let tag_ok = !tag.is_empty()
            && tag != b"*"
            && tag != b"+"
            && tag
                .iter()
                .all(|b| b.is_ascii_graphic() && !b"(){%\"\\]".contains(b));
        if !tag_ok || line.contains(&b'{') {
            return Err("STARTTLS: plaintext command before the upgrade");
        }
        if is(cmd, "STARTTLS") && word(line, 2).is_empty() {
            let done = srv.iter().skip(1).find(|(l, _)| word(l, 0) == tag);
            return match done {
                None => Ok(Phase::Plain { pass: end }),
                Some((l, _)) if is(word(l, 1), "OK") => Ok(Phase::Upgraded { tls_start: end }),
                Some(_) => Err("STARTTLS: the server refused the upgrade"),
            };
        }
        let allowed = is(cmd, "CAPABILITY") || is(cmd, "NOOP") || is(cmd, "ID");
        if !allowed {
            return Err("STARTTLS: plaintext command before the upgrade");
        }
        pass = end;
    }
    Ok(Phase::Plain { pass })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMTP_S: &[u8] = b"220 mx.example.test ESMTP Exim\r\n250-mx.example.test Hello\r\n250-SIZE 52428800\r\n250-STARTTLS\r\n250 HELP\r\n220 TLS go ahead\r\n";

    #[test]
    fn smtp_upgrade_in_every_split() {
        let c = b"EHLO client.test\r\nSTARTTLS\r\n\x16\x03\x01";
        let tls_start = 28;
        assert_eq!(phase(App::Smtp, c, SMTP_S), Phase::Upgraded { tls_start });
        // Before the go-ahead: the commands may pass, nothing after STARTTLS.
        let before = &SMTP_S[..SMTP_S.len() - 18];
        assert_eq!(
            phase(App::Smtp, c, before),
            Phase::Plain { pass: tls_start }
        );
        assert_eq!(
            phase(App::Smtp, &c[..10], before),
            Phase::Plain { pass: 0 },
            "an unfinished line does not pass"
        );
        assert_eq!(
            phase(App::Smtp, &c[..18], b"220 x\r\n"),
            Phase::Plain { pass: 18 }
        );
        for cut in 0..SMTP_S.len() {
            let p = phase(App::Smtp, c, &SMTP_S[..cut]);
            assert!(matches!(p, Phase::Plain { .. }), "cut {cut}: {p:?}");
        }
    }

    #[test]
    fn refusals_and_plaintext_sessions() {
        let s = b"220 mx\r\n250 mx\r\n454 TLS not available\r\n";
        assert!(matches!(
            phase(App::Smtp, b"EHLO c\r\nSTARTTLS\r\n", s),
            Phase::NoUpgrade(_)
        ));
        assert!(matches!(
            phase(App::Smtp, b"EHLO c\r\nMAIL FROM:<a@b>\r\n", b"220 mx\r\n"),
            Phase::NoUpgrade(_)
        ));
        assert!(matches!(
            phase(App::Ftp, b"USER anonymous\r\n", b"220 ftp\r\n"),
            Phase::NoUpgrade(_)
        ));
        assert!(matches!(
            phase(App::Imap, b"a1 LOGIN u p\r\n", b"* OK ready\r\n"),
            Phase::NoUpgrade(_)
        ));
        assert!(matches!(phase(App::Http, b"", b""), Phase::NoUpgrade(_)));
        let long = vec![b'a'; MAX_LINE + 2];
        assert!(matches!(phase(App::Smtp, &long, b""), Phase::NoUpgrade(_)));
    }

    #[test]
    fn imap_pop3_ftp() {
        let s = b"* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n* CAPABILITY IMAP4rev1 STARTTLS\r\na1 OK done\r\na2 OK Begin TLS negotiation now.\r\n";
        let c = b"a1 CAPABILITY\r\na2 STARTTLS\r\n";
        assert_eq!(
            phase(App::Imap, c, s),
            Phase::Upgraded { tls_start: c.len() }
        );
        assert_eq!(
            phase(App::Imap, c, &s[..s.len() - 34]),
            Phase::Plain { pass: c.len() }
        );
        let s = b"+OK Dovecot ready.\r\n+OK\r\nSTLS\r\nUSER\r\n.\r\n+OK Begin TLS\r\n";
        let c = b"CAPA\r\nSTLS\r\n";
        assert_eq!(
            phase(App::Pop3, c, s),
            Phase::Upgraded { tls_start: c.len() }
        );
        assert_eq!(
            phase(App::Pop3, c, &s[..s.len() - 15]),
            Phase::Plain { pass: c.len() }
        );
        let s = b"220 (vsFTPd 3.0.3)\r\n211-Features:\r\n AUTH TLS\r\n PBSZ\r\n211 End\r\n234 Proceed with negotiation.\r\n";
        let c = b"FEAT\r\nAUTH TLS\r\n";
        assert_eq!(
            phase(App::Ftp, c, s),
            Phase::Upgraded { tls_start: c.len() }
        );
        assert!(matches!(
            phase(App::Ftp, c, b"220 x\r\n211 End\r\n530 no\r\n"),
            Phase::NoUpgrade(_)
        ));
    }
}
