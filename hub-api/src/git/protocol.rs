//! Git's smart HTTP wire protocol for fetching (`git-upload-pack`), versions 0
//! and 2: parsing a client's request and writing the server's lines. Packet
//! lines are read and written with `gix-packetline`; what to send is decided
//! in `registry::git_serve`.

use gix_packetline::blocking_io::encode;
use gix_packetline::decode::{self, Stream};
use gix_packetline::{Channel, PacketLineRef};

/// What the server says it is.
pub const AGENT: &str = concat!("agent=paddock/", env!("CARGO_PKG_VERSION"));

/// The largest sideband payload (a 65520-byte packet less its length and band byte).
pub const MAX_BAND_DATA: usize = 65515;

/// A packet line of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkt {
    Data(Vec<u8>),
    Flush,
    Delim,
    End,
}

/// Splits a request body into packet lines; an error names what is malformed.
pub fn read_all(body: &[u8]) -> Result<Vec<Pkt>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        match decode::streaming(&body[pos..]).map_err(|e| format!("malformed packet line: {e}"))? {
            Stream::Complete {
                line,
                bytes_consumed,
            } => {
                out.push(match line {
                    PacketLineRef::Data(d) => Pkt::Data(d.to_vec()),
                    PacketLineRef::Flush => Pkt::Flush,
                    PacketLineRef::Delimiter => Pkt::Delim,
                    PacketLineRef::ResponseEnd => Pkt::End,
                });
                pos += bytes_consumed;
            }
            Stream::Incomplete { .. } => return Err("the request ends inside a packet line".into()),
        }
    }
    Ok(out)
}

/// Appends a text packet line (`line` should end with `\n`).
pub fn data(out: &mut Vec<u8>, line: &[u8]) {
    encode::data_to_write(line, &mut *out).expect("writing to a Vec");
}

pub fn flush(out: &mut Vec<u8>) {
    encode::flush_to_write(&mut *out).expect("writing to a Vec");
}

pub fn delim(out: &mut Vec<u8>) {
    encode::delim_to_write(&mut *out).expect("writing to a Vec");
}

/// Appends `bytes` as side-band packets of `channel`.
pub fn band(out: &mut Vec<u8>, channel: Channel, bytes: &[u8]) {
    for chunk in bytes.chunks(MAX_BAND_DATA) {
        encode::band_to_write(channel, chunk, &mut *out).expect("writing to a Vec");
    }
}

/// An error packet (`ERR ...`), which git prints and stops on.
pub fn error(out: &mut Vec<u8>, message: &str) {
    encode::error_to_write(message.as_bytes(), &mut *out).expect("writing to a Vec");
}

/// A line's text without its trailing newline.
fn text(line: &[u8]) -> Result<&str, String> {
    let s = std::str::from_utf8(line).map_err(|_| "a request line is not UTF-8".to_string())?;
    Ok(s.strip_suffix('\n').unwrap_or(s))
}

/// A 40-hex object id, lowercased; an error names the line.
fn oid(s: &str, line: &str) -> Result<String, String> {
    if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{line:?} does not name a SHA-1 object id"))
    }
}

/// A fetch negotiation request, either protocol version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchRequest {
    pub wants: Vec<String>,
    pub haves: Vec<String>,
    /// The client's shallow commits (it has them, not their parents).
    pub shallow: Vec<String>,
    /// `deepen N`: history limited to N commits from the wants.
    pub deepen: Option<u32>,
    pub done: bool,
    /// Capabilities the client asked for (v0), or `fetch` arguments (v2).
    pub caps: Vec<String>,
}

impl FetchRequest {
    pub fn has_cap(&self, name: &str) -> bool {
        self.caps.iter().any(|c| c == name)
    }
}

/// Parses one line shared by both versions; false when it is none of them.
fn common_line(r: &mut FetchRequest, l: &str) -> Result<bool, String> {
    if let Some(rest) = l.strip_prefix("have ") {
        r.haves.push(oid(rest.trim(), l)?);
    } else if let Some(rest) = l.strip_prefix("shallow ") {
        r.shallow.push(oid(rest.trim(), l)?);
    } else if let Some(rest) = l.strip_prefix("deepen ") {
        let n: u32 = rest
            .trim()
            .parse()
            .map_err(|_| format!("{l:?}: the depth is not a number"))?;
        if n == 0 {
            return Err("deepen 0 is not a depth".into());
        }
        r.deepen = Some(n);
    } else if l.starts_with("deepen-since ") || l.starts_with("deepen-not ") {
        return Err(format!(
            "{l:?}: only deepen by a number of commits is supported (--depth)"
        ));
    } else if l == "done" {
        r.done = true;
    } else {
        return Ok(false);
    }
    Ok(true)
}

/// Parses a protocol v0 `git-upload-pack` request: wants (capabilities on the
/// first), shallow and deepen lines, a flush, then haves and maybe `done`.
pub fn parse_v0(pkts: &[Pkt]) -> Result<FetchRequest, String> {
    let mut r = FetchRequest::default();
    for p in pkts {
        let Pkt::Data(d) = p else { continue };
        let l = text(d)?;
        if let Some(rest) = l.strip_prefix("want ") {
            let mut parts = rest.split(' ');
            let id = parts.next().unwrap_or_default();
            r.wants.push(oid(id, l)?);
            if r.wants.len() == 1 {
                r.caps
                    .extend(parts.filter(|c| !c.is_empty()).map(str::to_string));
            }
        } else if !common_line(&mut r, l)? {
            return Err(format!("unexpected line {l:?} in an upload-pack request"));
        }
    }
    Ok(r)
}

/// A protocol v2 command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Command {
    LsRefs {
        symrefs: bool,
        peel: bool,
        unborn: bool,
        prefixes: Vec<String>,
    },
    Fetch(FetchRequest),
}

/// Parses a protocol v2 request: `command=...`, capabilities, a delimiter,
/// the command's arguments, a flush.
pub fn parse_v2(pkts: &[Pkt]) -> Result<V2Command, String> {
    let mut command = None;
    let mut args = Vec::new();
    let mut in_args = false;
    for p in pkts {
        match p {
            Pkt::Delim => in_args = true,
            Pkt::Flush | Pkt::End => break,
            Pkt::Data(d) => {
                let l = text(d)?;
                if in_args {
                    args.push(l.to_string());
                } else if let Some(c) = l.strip_prefix("command=") {
                    command = Some(c.to_string());
                } else if let Some(f) = l.strip_prefix("object-format=") {
                    if f != "sha1" {
                        return Err(format!("object format {f} is not supported (sha1 only)"));
                    }
                }
            }
        }
    }
    match command.as_deref() {
        Some("ls-refs") => {
            let mut symrefs = false;
            let mut peel = false;
            let mut unborn = false;
            let mut prefixes = Vec::new();
            for a in args {
                match a.as_str() {
                    "symrefs" => symrefs = true,
                    "peel" => peel = true,
                    "unborn" => unborn = true,
                    _ => {
                        if let Some(p) = a.strip_prefix("ref-prefix ") {
                            prefixes.push(p.to_string());
                        }
                    }
                }
            }
            Ok(V2Command::LsRefs {
                symrefs,
                peel,
                unborn,
                prefixes,
            })
        }
        Some("fetch") => {
            let mut r = FetchRequest::default();
            for a in &args {
                if let Some(rest) = a.strip_prefix("want ") {
                    r.wants.push(oid(rest.trim(), a)?);
                } else if a.starts_with("want-ref ") || a.starts_with("filter ") {
                    return Err(format!("{a:?} was not advertised"));
                } else if !common_line(&mut r, a)? {
                    r.caps.push(a.clone());
                }
            }
            Ok(V2Command::Fetch(r))
        }
        Some(other) => Err(format!("unknown command {other:?}")),
        None => Err("the request names no command".into()),
    }
}

/// The service announcement that starts an `info/refs` answer.
pub fn service_header(out: &mut Vec<u8>, service: &str) {
    data(out, format!("# service={service}\n").as_bytes());
    flush(out);
}

/// Protocol v2's capability advertisement.
pub fn v2_capabilities(out: &mut Vec<u8>) {
    for l in [
        "version 2".to_string(),
        AGENT.to_string(),
        "ls-refs=unborn".to_string(),
        "fetch=shallow".to_string(),
        "object-format=sha1".to_string(),
    ] {
        data(out, format!("{l}\n").as_bytes());
    }
    flush(out);
}

/// Capabilities of protocol v0's ref advertisement.
pub fn v0_capabilities(head_target: Option<&str>) -> String {
    let mut caps = vec![
        "multi_ack_detailed",
        "side-band-64k",
        "thin-pack",
        "ofs-delta",
        "shallow",
        "deepen-relative",
        "no-progress",
        "include-tag",
        "allow-tip-sha1-in-want",
        "allow-reachable-sha1-in-want",
        "object-format=sha1",
    ]
    .into_iter()
    .map(str::to_string)
    .collect::<Vec<_>>();
    if let Some(t) = head_target {
        caps.push(format!("symref=HEAD:{t}"));
    }
    caps.push(AGENT.to_string());
    caps.join(" ")
}

/// Protocol v0's ref advertisement: `refs` as (name, id), HEAD first when
/// the default branch exists.
pub fn v0_advertisement(out: &mut Vec<u8>, refs: &[(String, String)], head_target: Option<&str>) {
    let caps = v0_capabilities(head_target);
    let mut lines: Vec<(String, String)> = Vec::new();
    if let Some(t) = head_target {
        if let Some((_, id)) = refs.iter().find(|(n, _)| n == t) {
            lines.push(("HEAD".into(), id.clone()));
        }
    }
    lines.extend(refs.iter().cloned());
    if lines.is_empty() {
        data(
            out,
            format!("{} capabilities^{{}}\0{caps}\n", "0".repeat(40)).as_bytes(),
        );
    }
    for (i, (name, id)) in lines.iter().enumerate() {
        if i == 0 {
            data(out, format!("{id} {name}\0{caps}\n").as_bytes());
        } else {
            data(out, format!("{id} {name}\n").as_bytes());
        }
    }
    flush(out);
}

/// Capabilities of `git-receive-pack`'s ref advertisement. Ref deletion is
/// not advertised (git refuses `git push --delete` itself, with its reason).
pub fn receive_capabilities() -> String {
    [
        "report-status",
        "delete-refs",
        "side-band-64k",
        "quiet",
        "atomic",
        "ofs-delta",
        "object-format=sha1",
        AGENT,
    ]
    .join(" ")
}

/// `git-receive-pack`'s ref advertisement: every ref, capabilities on the
/// first line (no HEAD: pushing names refs).
pub fn receive_advertisement(out: &mut Vec<u8>, refs: &[(String, String)]) {
    let caps = receive_capabilities();
    if refs.is_empty() {
        data(
            out,
            format!("{} capabilities^{{}}\0{caps}\n", "0".repeat(40)).as_bytes(),
        );
    }
    for (i, (name, id)) in refs.iter().enumerate() {
        if i == 0 {
            data(out, format!("{id} {name}\0{caps}\n").as_bytes());
        } else {
            data(out, format!("{id} {name}\n").as_bytes());
        }
    }
    flush(out);
}

/// The all-zero id: a ref that does not exist (before) or goes (after).
pub const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// One ref update of a push: `old new name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

/// The command section of a push: ref updates and the client's capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushCommands {
    pub updates: Vec<RefUpdate>,
    pub caps: Vec<String>,
}

impl PushCommands {
    pub fn has_cap(&self, name: &str) -> bool {
        self.caps.iter().any(|c| c == name)
    }
}

/// Reads the command section of a `git-receive-pack` request from the start
/// of `buf`: `old new ref` lines (capabilities after a NUL on the first) up
/// to a flush. None while the flush has not arrived; otherwise the commands
/// and how many bytes they took (the pack follows).
pub fn parse_push_commands(buf: &[u8]) -> Result<Option<(PushCommands, usize)>, String> {
    let mut pos = 0;
    let mut cmds = PushCommands::default();
    loop {
        if pos >= buf.len() {
            return Ok(None);
        }
        let (line, used) = match decode::streaming(&buf[pos..])
            .map_err(|e| format!("malformed packet line: {e}"))?
        {
            Stream::Complete {
                line,
                bytes_consumed,
            } => (line, bytes_consumed),
            Stream::Incomplete { .. } => return Ok(None),
        };
        pos += used;
        let d = match line {
            PacketLineRef::Flush => return Ok(Some((cmds, pos))),
            PacketLineRef::Data(d) => d,
            _ => return Err("unexpected packet in a push's commands".into()),
        };
        let (cmd, caps) = match d.iter().position(|b| *b == 0) {
            Some(i) => (&d[..i], Some(&d[i + 1..])),
            None => (d, None),
        };
        let l = text(cmd)?;
        if let Some(caps) = caps {
            let caps = text(caps)?;
            cmds.caps.extend(
                caps.split(' ')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            );
        }
        if l.starts_with("shallow ") {
            return Err("pushing from a shallow clone is not supported".into());
        }
        if l.starts_with("push-cert") {
            return Err("signed pushes were not advertised".into());
        }
        let mut parts = l.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{l:?} is not a ref update"));
        };
        cmds.updates.push(RefUpdate {
            old: oid(old, l)?,
            new: oid(new, l)?,
            name: name.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        data(&mut v, s.as_bytes());
        v
    }

    #[test]
    fn parses_v0_and_v2_requests() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let mut body = pkt(&format!("want {a} multi_ack_detailed side-band-64k\n"));
        body.extend(pkt("deepen 1\n"));
        flush(&mut body);
        body.extend(pkt(&format!("have {b}\n")));
        body.extend(pkt("done\n"));
        let r = parse_v0(&read_all(&body).unwrap()).unwrap();
        assert_eq!(r.wants, std::slice::from_ref(&a));
        assert_eq!(r.haves, std::slice::from_ref(&b));
        assert_eq!(r.deepen, Some(1));
        assert!(r.done && r.has_cap("side-band-64k"));

        let mut body = pkt("command=fetch\n");
        body.extend(pkt("object-format=sha1\n"));
        delim(&mut body);
        body.extend(pkt("thin-pack\n"));
        body.extend(pkt(&format!("want {a}\n")));
        body.extend(pkt("done\n"));
        flush(&mut body);
        let V2Command::Fetch(r) = parse_v2(&read_all(&body).unwrap()).unwrap() else {
            panic!("not a fetch")
        };
        assert_eq!(r.wants, [a]);
        assert!(r.done && r.has_cap("thin-pack"));
    }

    #[test]
    fn refuses_malformed_requests() {
        assert!(read_all(b"00").is_err());
        assert!(read_all(b"zzzz").is_err());
        assert!(parse_v0(&read_all(&pkt("want 123\n")).unwrap()).is_err());
        assert!(parse_v2(&read_all(&pkt("command=push\n")).unwrap()).is_err());
        let mut body = pkt("command=fetch\n");
        delim(&mut body);
        body.extend(pkt("deepen-since 12345\n"));
        assert!(parse_v2(&read_all(&body).unwrap())
            .unwrap_err()
            .contains("deepen"));
    }

    #[test]
    fn parses_push_commands() {
        let a = "a".repeat(40);
        let mut body = pkt(&format!(
            "{ZERO_ID} {a} refs/heads/x\0report-status side-band-64k\n"
        ));
        body.extend(pkt(&format!("{a} {ZERO_ID} refs/tags/t\n")));
        assert_eq!(parse_push_commands(&body).unwrap(), None);
        flush(&mut body);
        body.extend(b"PACK");
        let (c, used) = parse_push_commands(&body).unwrap().unwrap();
        assert_eq!(&body[used..], b"PACK");
        assert_eq!(c.updates.len(), 2);
        assert_eq!(c.updates[0].name, "refs/heads/x");
        assert!(c.has_cap("report-status") && c.has_cap("side-band-64k"));
        assert!(parse_push_commands(&pkt("shallow x\n")).is_err());
        assert!(parse_push_commands(&pkt("a b c\n")).is_err());
    }

    #[test]
    fn band_splits_large_payloads() {
        let mut out = Vec::new();
        band(&mut out, Channel::Data, &vec![7u8; MAX_BAND_DATA + 10]);
        let pkts = read_all(&out).unwrap();
        assert_eq!(pkts.len(), 2);
        let Pkt::Data(d) = &pkts[0] else { panic!() };
        assert_eq!(d.len(), MAX_BAND_DATA + 1);
        assert_eq!(d[0], 1);
    }
}
