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

/// Complete lines of `data` (each without its line ending) with the offset after each, read
/// lazily: callers stop at the upgrade, so the TLS bytes after it are never read as lines. An
/// item is `Err` when a line runs over [`MAX_LINE`]; the iterator ends at an unfinished line.
struct Lines<'a> {
    data: &'a [u8],
    pos: usize,
}

fn lines(data: &[u8]) -> Lines<'_> {
    Lines { data, pos: 0 }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<(&'a [u8], usize), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.data[self.pos..];
        match rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
            Some(nl) => {
                let line = &rest[..nl];
                self.pos += nl + 1;
                Some(Ok((line.strip_suffix(b"\r").unwrap_or(line), self.pos)))
            }
            None if rest.len() > MAX_LINE => {
                self.pos = self.data.len();
                Some(Err("STARTTLS: line too long"))
            }
            None => None,
        }
    }
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
/// codes of the first `count` complete replies (fewer if not there yet). FTP lets continuation
/// lines be free text.
fn coded_replies(server: &[u8], count: usize) -> Result<Vec<u16>, &'static str> {
    let mut out = Vec::new();
    let mut open: Option<&[u8]> = None;
    for item in lines(server) {
        if out.len() >= count {
            break;
        }
        let (line, _) = item?;
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

/// (client bytes of negotiation commands, the upgrade command's (index, end offset) if sent).
type Commands = (usize, Option<(usize, usize)>);

/// The client's negotiation commands up to and including the upgrade command: (commands that
/// passed so far, end offset of the last one, the upgrade command's (index, end) if sent).
/// `Err` for a command that does not belong before an upgrade.
fn commands<'a>(
    client: &'a [u8],
    mut allowed: impl FnMut(&'a [u8]) -> Result<bool, &'static str>,
) -> Result<Commands, &'static str> {
    let mut pass = 0;
    for (i, item) in lines(client).enumerate() {
        if i >= MAX_COMMANDS {
            return Err("STARTTLS: too many commands before the upgrade");
        }
        let (line, end) = item?;
        // true: the upgrade command; false: a negotiation command.
        if allowed(line)? {
            return Ok((end, Some((i, end))));
        }
        pass = end;
    }
    Ok((pass, None))
}

/// SMTP and FTP: one reply per command, after the greeting.
fn coded(
    client: &[u8],
    server: &[u8],
    allowed: &[&str],
    upgrade: &str,
    go: u16,
) -> Result<Phase, &'static str> {
    let (pass, up) = commands(client, |line| {
        let cmd = word(line, 0);
        if is(cmd, upgrade) {
            // FTP: AUTH TLS / AUTH SSL (RFC 4217); SMTP: a bare STARTTLS.
            let arg_ok = if upgrade == "AUTH" {
                let a = word(line, 1);
                (is(a, "TLS") || is(a, "SSL") || is(a, "TLS-C")) && word(line, 2).is_empty()
            } else {
                word(line, 1).is_empty()
            };
            return if arg_ok {
                Ok(true)
            } else {
                Err("STARTTLS: plaintext command before the upgrade")
            };
        }
        if allowed.iter().any(|a| is(cmd, a)) {
            Ok(false)
        } else {
            Err("STARTTLS: plaintext command before the upgrade")
        }
    })?;
    // Reply 0 is the greeting; reply i+1 answers command i.
    let want = up.map_or(1, |(i, _)| i + 2);
    let replies = coded_replies(server, want)?;
    match replies.first() {
        Some(220) | None => {}
        Some(_) => return Err("STARTTLS: server refused the session"),
    }
    match up {
        None => Ok(Phase::Plain { pass }),
        Some((i, end)) => match replies.get(i + 1) {
            None => Ok(Phase::Plain { pass: end }),
            Some(&c) if c == go => Ok(Phase::Upgraded { tls_start: end }),
            Some(_) => Err("STARTTLS: the server refused the upgrade"),
        },
    }
}

/// POP3: `+OK`/`-ERR` replies; CAPA's positive reply is multi-line, ended by `.`.
fn pop3(client: &[u8], server: &[u8]) -> Result<Phase, &'static str> {
    let (pass, up) = commands(client, |line| {
        let cmd = word(line, 0);
        match (is(cmd, "STLS"), is(cmd, "CAPA"), word(line, 1).is_empty()) {
            (true, _, true) => Ok(true),
            (_, true, true) => Ok(false),
            _ => Err("STARTTLS: plaintext command before the upgrade"),
        }
    })?;
    let mut s = lines(server);
    // Greeting.
    match s.next().transpose()? {
        None => return Ok(Phase::Plain { pass }),
        Some((l, _)) if l.starts_with(b"+OK") => {}
        Some(_) => return Err("STARTTLS: server refused the session"),
    }
    let Some((i, end)) = up else {
        return Ok(Phase::Plain { pass });
    };
    // The replies to the i CAPA commands before STLS, then STLS's.
    for _ in 0..i {
        match s.next().transpose()? {
            None => return Ok(Phase::Plain { pass: end }),
            Some((l, _)) if l.starts_with(b"+OK") => loop {
                // Multi-line: up to the lone dot.
                match s.next().transpose()? {
                    None => return Ok(Phase::Plain { pass: end }),
                    Some((l, _)) if l == b"." => break,
                    Some(_) => {}
                }
            },
            Some(_) => {}
        }
    }
    match s.next().transpose()? {
        None => Ok(Phase::Plain { pass: end }),
        Some((l, _)) if l.starts_with(b"+OK") => Ok(Phase::Upgraded { tls_start: end }),
        Some(_) => Err("STARTTLS: the server refused the upgrade"),
    }
}

/// IMAP: tagged commands; the tagged completion (`tag OK`) answers each.
fn imap(client: &[u8], server: &[u8]) -> Result<Phase, &'static str> {
    let mut up_tag: &[u8] = b"";
    let (pass, up) = commands(client, |line| {
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
            up_tag = tag;
            return Ok(true);
        }
        if is(cmd, "CAPABILITY") || is(cmd, "NOOP") || is(cmd, "ID") {
            Ok(false)
        } else {
            Err("STARTTLS: plaintext command before the upgrade")
        }
    })?;
    let mut s = lines(server);
    match s.next().transpose()? {
        None => return Ok(Phase::Plain { pass }),
        Some((l, _)) if l.starts_with(b"* OK") => {}
        Some(_) => return Err("STARTTLS: server refused the session"),
    }
    let Some((_, end)) = up else {
        return Ok(Phase::Plain { pass });
    };
    // Up to the STARTTLS command's tagged completion (the server sends nothing in plaintext
    // after it).
    for item in s {
        let (l, _) = item?;
        if word(l, 0) == up_tag {
            return if is(word(l, 1), "OK") {
                Ok(Phase::Upgraded { tls_start: end })
            } else {
                Err("STARTTLS: the server refused the upgrade")
            };
        }
    }
    Ok(Phase::Plain { pass: end })
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

    /// After the go-ahead both sides speak TLS: long binary records, with or without newline
    /// bytes, are never read as lines.
    #[test]
    fn tls_bytes_after_the_upgrade_are_not_lines() {
        let mut c = b"EHLO client.test\r\nSTARTTLS\r\n".to_vec();
        let mut s = SMTP_S.to_vec();
        let mut tls = vec![0x16, 0x03, 0x01, 0x06, 0x00];
        tls.extend((0..1600u32).map(|i| (i * 7 % 251) as u8));
        c.extend_from_slice(&tls);
        s.extend_from_slice(&tls);
        assert_eq!(phase(App::Smtp, &c, &s), Phase::Upgraded { tls_start: 28 });
        let mut c = b"a1 STARTTLS\r\n".to_vec();
        c.extend_from_slice(&tls);
        let mut s = b"* OK ready\r\na1 OK go\r\n".to_vec();
        s.extend_from_slice(&tls);
        assert_eq!(phase(App::Imap, &c, &s), Phase::Upgraded { tls_start: 13 });
        let mut c = b"STLS\r\n".to_vec();
        c.extend_from_slice(&tls);
        let mut s = b"+OK ready\r\n+OK go\r\n".to_vec();
        s.extend_from_slice(&tls);
        assert_eq!(phase(App::Pop3, &c, &s), Phase::Upgraded { tls_start: 6 });
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
