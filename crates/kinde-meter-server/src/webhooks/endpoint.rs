//! Where a webhook may point: an `http`/`https` URL with a host and no
//! credentials, whose addresses are all public, unless the server runs with
//! `--webhook-allow-private-networks` (`docs/webhooks.md#endpoints`).
//!
//! The same rule is applied three times: when a webhook is created or changed
//! ([`EndpointCheck::check`], resolving the host), on every connection a
//! delivery makes ([`GuardedResolver`], so a name that later resolves to a
//! private address is refused: DNS rebinding), and on every redirect a
//! delivery follows ([`redirect_policy`]; reqwest does not resolve a literal
//! IP, so [`check_url`] checks those itself).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The longest endpoint URL accepted, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// How long resolving an endpoint's host may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many redirects a delivery follows at most.
pub const MAX_REDIRECTS: usize = 5;

/// Why an endpoint is refused; the message names the field (`endpoint`) and,
/// for an address, the flag that would allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointError(String);

impl EndpointError {
    fn new(message: impl Into<String>) -> EndpointError {
        EndpointError(message.into())
    }

    fn forbidden(host: &str, ip: IpAddr) -> EndpointError {
        EndpointError(format!(
            "endpoint host {host} is (or resolves to) {ip}, a loopback, private, link-local or \
             otherwise non-public address; the server refuses those unless started with \
             --webhook-allow-private-networks"
        ))
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EndpointError {}

/// Whether a webhook may not be delivered to `ip` (without
/// `--webhook-allow-private-networks`): unspecified, loopback, private
/// (RFC 1918, unique local `fc00::/7`), link-local (`169.254.0.0/16` with the
/// cloud metadata address, `fe80::/10`), shared/CGNAT `100.64.0.0/10`,
/// broadcast, multicast, reserved, and IPv6 addresses that embed such an IPv4
/// address (mapped, compatible, NAT64, 6to4).
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", 0.0.0.0 included
        || a == 10 // private
        || a == 127 // loopback
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254) // link-local, cloud metadata 169.254.169.254
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 168) // private
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 224 // multicast 224/4, reserved 240/4, broadcast
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // IPv4-compatible (deprecated) ::a.b.c.d and NAT64 64:ff9b::a.b.c.d.
    if segments[..6] == [0; 6] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded(segments[6], segments[7]));
    }
    // 6to4 2002:a.b.c.d::/48.
    if segments[0] == 0x2002 {
        return forbidden_v4(embedded(segments[1], segments[2]));
    }
    (segments[0] & 0xff00) == 0xff00 // multicast
        || (segments[0] & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 included
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || segments[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
}

/// Parses `text` as an endpoint and checks what can be checked without DNS:
/// [`check_url`], plus length and no whitespace or control characters (a URL
/// parser would silently drop some).
pub fn parse_endpoint(text: &str, allow_private: bool) -> Result<Url, EndpointError> {
    if text.is_empty() {
        return Err(EndpointError::new("endpoint must not be empty"));
    }
    if text.len() > MAX_ENDPOINT_LEN {
        return Err(EndpointError::new(format!(
            "endpoint must be at most {MAX_ENDPOINT_LEN} bytes"
        )));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EndpointError::new(
            "endpoint must not contain whitespace or control characters",
        ));
    }
    let url = Url::parse(text)
        .map_err(|e| EndpointError::new(format!("endpoint is not a valid URL: {e}")))?;
    check_url(&url, allow_private)?;
    Ok(url)
}

/// The rule for a URL without resolving it: `http` or `https`, a host, no
/// user name or password, and, for a literal IP host, a public address (unless
/// `allow_private`). A delivery's redirect target passes through here.
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), EndpointError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::new("endpoint must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(EndpointError::new(
            "endpoint must not contain a user name or password",
        ));
    }
    let ip = match host_of(url) {
        None => return Err(EndpointError::new("endpoint must name a host")),
        Some(UrlHost::Domain(_)) => return Ok(()),
        Some(UrlHost::Ip(ip)) => ip,
    };
    if !allow_private && is_forbidden(ip) {
        return Err(EndpointError::forbidden(
            url.host_str().unwrap_or_default(),
            ip,
        ));
    }
    Ok(())
}

/// A URL's host: a name to resolve or a literal address.
enum UrlHost<'a> {
    Domain(&'a str),
    Ip(IpAddr),
}

/// The host of `url` (`None`: none, or empty); the URL parser has already
/// normalized every spelling of an IPv4 address to dotted decimal.
fn host_of(url: &Url) -> Option<UrlHost<'_>> {
    let host = url.host_str().filter(|h| !h.is_empty())?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse::<IpAddr>() {
        Ok(ip) => UrlHost::Ip(ip),
        Err(_) => UrlHost::Domain(host),
    })
}

/// Resolves `host` (a domain name) and refuses it if it has no address or if
/// any of its addresses is forbidden (unless `allow_private`): whichever
/// address a connection picks must be allowed.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, EndpointError> {
    // A bracketed IPv6 literal or a plain IP needs no lookup.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if !allow_private && is_forbidden(ip) {
            return Err(EndpointError::forbidden(host, ip));
        }
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)));
    let addrs: Vec<SocketAddr> = match lookup.await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            return Err(EndpointError::new(format!(
                "endpoint host {host} does not resolve: {e}"
            )));
        }
        Err(_) => {
            return Err(EndpointError::new(format!(
                "endpoint host {host} did not resolve within {} s",
                RESOLVE_TIMEOUT.as_secs()
            )));
        }
    };
    if addrs.is_empty() {
        return Err(EndpointError::new(format!(
            "endpoint host {host} has no address"
        )));
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| is_forbidden(a.ip())) {
        return Err(EndpointError::forbidden(host, bad.ip()));
    }
    Ok(addrs)
}

/// The endpoint rule as the management API applies it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCheck {
    /// `--webhook-allow-private-networks`: any address is accepted.
    pub allow_private_networks: bool,
}

impl EndpointCheck {
    /// Checks an endpoint given to the API: [`parse_endpoint`], then its host
    /// must resolve, to allowed addresses only. The endpoint is kept as
    /// given, not normalized.
    pub async fn check(&self, text: &str) -> Result<(), EndpointError> {
        let url = parse_endpoint(text, self.allow_private_networks)?;
        if let Some(UrlHost::Domain(domain)) = host_of(&url) {
            let port = url.port_or_known_default().unwrap_or(80);
            resolve_checked(domain, port, self.allow_private_networks).await?;
        }
        Ok(())
    }
}

/// A `reqwest` resolver that refuses, at connection time, a name resolving to
/// a forbidden address (unless `allow_private`). Plug it into the delivery
/// client with `ClientBuilder::dns_resolver`, and use [`redirect_policy`] and
/// `no_proxy()` with it: reqwest calls no resolver for a literal IP host, and a
/// proxy would resolve names itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver {
    /// Accept any address (`--webhook-allow-private-networks`).
    pub allow_private: bool,
}

impl GuardedResolver {
    /// The resolver for this setting, ready for `ClientBuilder::dns_resolver`.
    pub fn new(allow_private: bool) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver { allow_private })
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&host, 0, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The redirect policy of deliveries: at most [`MAX_REDIRECTS`] hops, each
/// target passing [`check_url`] (its name, if any, then goes through the
/// [`GuardedResolver`] when connecting).
pub fn redirect_policy(allow_private: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match check_url(attempt.url(), allow_private) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(text: &str) -> bool {
        is_forbidden(text.parse().unwrap())
    }

    #[test]
    fn non_public_ipv4_addresses_are_forbidden() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "192.168.255.255",
            "169.254.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(forbidden(ip), "{ip} must be forbidden");
        }
    }

    #[test]
    fn public_ipv4_addresses_are_allowed() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.1",
            "169.253.255.255",
            "169.255.0.1",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "203.0.113.10",
            "223.255.255.255",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn non_public_ipv6_addresses_are_forbidden() {
        for ip in [
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd00::1",
            "fd00:ec2::254",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            // IPv4-mapped and -compatible forms of forbidden IPv4 addresses.
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::ffff:192.168.1.1",
            "::ffff:100.64.0.1",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::10.0.0.1",
            // NAT64 and 6to4 of forbidden IPv4 addresses.
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
        ] {
            assert!(forbidden(ip), "{ip} must be forbidden");
        }
    }

    #[test]
    fn public_ipv6_addresses_are_allowed() {
        for ip in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "fe00::1",
            "fbff::1",
        ] {
            assert!(!forbidden(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn urls_need_http_a_host_and_no_credentials() {
        for (text, why) in [
            ("ftp://example.com/x", "http or https"),
            ("file:///etc/passwd", "http or https"),
            ("javascript:alert(1)", "http or https"),
            ("http://user:pw@example.com/", "user name or password"),
            ("https://user@example.com/", "user name or password"),
            ("example.com/hook", "not a valid URL"),
            ("http://exa mple.com/", "whitespace"),
            ("http://example.com/\nx", "whitespace"),
            ("", "empty"),
        ] {
            let err = parse_endpoint(text, false).unwrap_err();
            assert!(err.message().contains(why), "{text}: {err}");
            assert!(err.message().starts_with("endpoint"), "{err}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_ENDPOINT_LEN));
        assert!(parse_endpoint(&long, false).is_err());
        for text in [
            "https://example.com/hook",
            "http://example.com:8080/a?b=c",
            "http://203.0.113.7/x",
            "https://[2606:4700:4700::1111]/x",
        ] {
            parse_endpoint(text, false).unwrap();
        }
    }

    #[test]
    fn literal_ips_are_checked_in_every_spelling() {
        for text in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://10.0.0.1:8080/",
        ] {
            let err = parse_endpoint(text, false).unwrap_err();
            assert!(
                err.message().contains("--webhook-allow-private-networks"),
                "{text}: {err}"
            );
            parse_endpoint(text, true).unwrap();
        }
    }

    #[tokio::test]
    async fn names_are_resolved_and_checked() {
        let strict = EndpointCheck::default();
        let err = strict.check("http://localhost:9/hook").await.unwrap_err();
        assert!(err.message().contains("localhost"), "{err}");
        assert!(
            err.message().contains("--webhook-allow-private-networks"),
            "{err}"
        );
        let err = strict
            .check("https://no-such-host.invalid/hook")
            .await
            .unwrap_err();
        assert!(err.message().contains("does not resolve"), "{err}");
        let lax = EndpointCheck {
            allow_private_networks: true,
        };
        lax.check("http://localhost:9/hook").await.unwrap();
        lax.check("http://127.0.0.1:9/hook").await.unwrap();
        strict.check("http://203.0.113.7/hook").await.unwrap();
    }

    #[tokio::test]
    async fn the_resolver_refuses_private_answers_at_delivery() {
        let strict = GuardedResolver::new(false);
        let err = match strict.resolve("localhost".parse().unwrap()).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("--webhook-allow-private-networks"), "{err}");
        let lax = GuardedResolver::new(true);
        let addrs: Vec<_> = match lax.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => panic!("{e}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[tokio::test]
    async fn a_delivery_client_refuses_private_targets_and_redirects_to_them() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A server on 127.0.0.1 that redirects to 169.254.169.254.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://169.254.169.254/x\r\n\
                          Content-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let strict = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(GuardedResolver::new(false))
            .redirect(redirect_policy(false))
            .build()
            .unwrap();
        // A name resolving to loopback is refused when connecting.
        let err = strict
            .post(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("webhook-allow-private-networks"),
            "{err:?}"
        );
        // Allowed to reach the receiver, the redirect to the metadata address is refused.
        let lax = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(GuardedResolver::new(true))
            .redirect(redirect_policy(false))
            .build()
            .unwrap();
        let err = lax
            .post(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_redirect(), "{err:?}");
        assert!(format!("{err:?}").contains("169.254.169.254"), "{err:?}");
    }
}
