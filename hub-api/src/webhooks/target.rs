//! Where a webhook may send: the URL rules and the address allow-list that
//! keeps a tenant from using the hub to reach internal networks (SSRF).
//!
//! Checked twice: when a webhook is created or its URL changed ([`check_url`],
//! which resolves the host once), and at every delivery on the address the
//! connection actually goes to ([`GuardedResolver`]: the client resolves
//! through it, and connects only to the addresses it lets through, so a name
//! that resolves to a public address at creation and to loopback later
//! (DNS rebinding) is refused). Redirects are never followed and no proxy is
//! used (`delivery::client`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The longest URL a webhook may have.
pub const MAX_URL_LEN: usize = 2048;

/// Why a target is refused (a 400 with this message at creation; the
/// attempt's error at delivery).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("url must be an absolute http:// or https:// URL ({0})")]
    Malformed(String),
    #[error("url must be at most {MAX_URL_LEN} characters")]
    TooLong,
    #[error("url must not carry credentials (user:password@); use the webhook secret")]
    Credentials,
    #[error("url must use http or https, not {0:?}")]
    Scheme(String),
    #[error("url must have a host")]
    NoHost,
    /// The address is outside the allow-list.
    #[error("webhook target refused: {host} is {why}; only public addresses are allowed{hint}")]
    Refused {
        host: String,
        why: &'static str,
        hint: &'static str,
    },
    #[error("webhook target refused: cannot resolve {0}")]
    Unresolvable(String),
}

/// What kind of address `ip` is, when it is not a public unicast one;
/// `private` ranges are allowed only with `--webhook-allow-private`, the
/// others never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Public,
    /// Loopback, RFC 1918, link-local, CGNAT, IPv6 unique-local and link-local.
    Private(&'static str),
    /// Unspecified, multicast, broadcast, documentation, reserved.
    Never(&'static str),
}

/// Classifies an address (IPv4-mapped, -compatible, NAT64 and 6to4 IPv6
/// addresses by the IPv4 address they carry).
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let o = ip.octets();
    if ip.is_loopback() {
        return Class::Private("a loopback address");
    }
    if ip.is_private() {
        return Class::Private("a private address");
    }
    if ip.is_link_local() {
        return Class::Private("a link-local address");
    }
    if o[0] == 100 && (o[1] & 0xc0) == 64 {
        return Class::Private("a shared (CGNAT) address");
    }
    if ip.is_unspecified() || o[0] == 0 {
        return Class::Never("an unspecified address");
    }
    if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        return Class::Never("a broadcast, multicast or reserved address");
    }
    if ip.is_documentation() || (o[0] == 198 && (o[1] & 0xfe) == 18) || (o[0..3] == [192, 0, 0]) {
        return Class::Never("a documentation, benchmarking or protocol address");
    }
    Class::Public
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    if ip.is_loopback() {
        return Class::Private("a loopback address");
    }
    if ip.is_unspecified() {
        return Class::Never("an unspecified address");
    }
    // IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
    // reach the IPv4 address they carry.
    if s[0..6] == [0, 0, 0, 0, 0, 0] {
        return classify_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(Ipv4Addr::new(
            (s[6] >> 8) as u8,
            s[6] as u8,
            (s[7] >> 8) as u8,
            s[7] as u8,
        ));
    }
    if s[0] == 0x2002 {
        return classify_v4(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Class::Private("a unique-local address");
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Class::Private("a link-local address");
    }
    if (s[0] & 0xff00) == 0xff00 {
        return Class::Never("a multicast address");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Class::Never("a documentation address");
    }
    Class::Public
}

/// Whether a delivery may connect to `ip`; the reason when not.
pub fn allowed(ip: IpAddr, allow_private: bool) -> Result<(), &'static str> {
    match classify(ip) {
        Class::Public => Ok(()),
        Class::Private(_) if allow_private => Ok(()),
        Class::Private(why) | Class::Never(why) => Err(why),
    }
}

fn refused(host: &str, why: &'static str, allow_private: bool) -> TargetError {
    TargetError::Refused {
        host: host.to_string(),
        why,
        hint: if allow_private {
            ""
        } else {
            " (an administrator may allow private ranges with --webhook-allow-private)"
        },
    }
}

/// Parses a webhook URL: http/https, a host, no credentials, at most
/// [`MAX_URL_LEN`] characters. IP hosts in any notation (`2130706433`,
/// `0x7f.1`) come out as addresses (the WHATWG parser the client uses too).
pub fn parse_url(raw: &str) -> Result<url::Url, TargetError> {
    if raw.len() > MAX_URL_LEN {
        return Err(TargetError::TooLong);
    }
    let u = url::Url::parse(raw.trim()).map_err(|e| TargetError::Malformed(e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(TargetError::Scheme(u.scheme().to_string()));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(TargetError::Credentials);
    }
    if u.host().is_none() {
        return Err(TargetError::NoHost);
    }
    Ok(u)
}

/// The address of an IP-literal host, if it is one.
pub fn ip_host(u: &url::Url) -> Option<IpAddr> {
    match u.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// The creation-time check: the URL's rules, then every address its host
/// resolves to now (each must be allowed). A host that does not resolve yet
/// (no DNS record, or no resolver reachable from the hub) is accepted: what
/// it resolves to when a delivery is made is checked then (the
/// [`GuardedResolver`]), which is the check that counts.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<url::Url, TargetError> {
    let u = parse_url(raw)?;
    let host = u.host_str().unwrap_or_default().to_string();
    if let Some(ip) = ip_host(&u) {
        allowed(ip, allow_private).map_err(|why| refused(&host, why, allow_private))?;
        return Ok(u);
    }
    let port = u.port_or_known_default().unwrap_or(80);
    let addrs = match resolve(&host, port).await {
        Ok(a) => a,
        Err(TargetError::Unresolvable(_)) => return Ok(u),
        Err(e) => return Err(e),
    };
    for a in &addrs {
        allowed(a.ip(), allow_private).map_err(|why| refused(&host, why, allow_private))?;
    }
    Ok(u)
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
    let lookup = tokio::net::lookup_host((host, port));
    let addrs: Vec<SocketAddr> = tokio::time::timeout(Duration::from_secs(5), lookup)
        .await
        .map_err(|_| TargetError::Unresolvable(host.to_string()))?
        .map_err(|_| TargetError::Unresolvable(host.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(TargetError::Unresolvable(host.to_string()));
    }
    Ok(addrs)
}

/// The delivery client's resolver: resolves once and hands the connector only
/// allowed addresses; a host with none is refused (the attempt's error names
/// why). IP-literal hosts do not pass through a resolver: the sender checks
/// them with [`allowed`] first.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs = resolve(&host, 0).await?;
            let mut refusal = None;
            let ok: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match allowed(a.ip(), allow_private) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal = Some(why);
                        false
                    }
                })
                .collect();
            if ok.is_empty() {
                let why = refusal.unwrap_or("not resolvable");
                return Err(Box::new(refused(&host, why, allow_private))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Class {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ranges() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            assert!(matches!(class(private), Class::Private(_)), "{private}");
        }
        for never in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "ff02::1",
            "192.0.2.1",
        ] {
            assert!(matches!(class(never), Class::Never(_)), "{never}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "100.128.0.1"] {
            assert_eq!(class(public), Class::Public, "{public}");
        }
        assert!(allowed("127.0.0.1".parse().unwrap(), true).is_ok());
        assert!(allowed("0.0.0.0".parse().unwrap(), true).is_err());
    }

    #[test]
    fn urls() {
        for (raw, ok) in [
            ("https://example.com/hook", true),
            ("ftp://example.com/", false),
            ("http://user:pw@example.com/", false),
            ("not a url", false),
            ("file:///etc/passwd", false),
        ] {
            assert_eq!(parse_url(raw).is_ok(), ok, "{raw}");
        }
        // Numeric IPv4 forms are addresses.
        for raw in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let u = parse_url(raw).unwrap();
            let ip = ip_host(&u).unwrap();
            assert!(matches!(classify(ip), Class::Private(_)), "{raw}");
        }
        assert_eq!(
            parse_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))),
            Err(TargetError::TooLong)
        );
    }
}
