//! The network-facing values of a sweep file: a server's base URL (plain
//! http only to a loopback host) and the values sent as HTTP headers. Also
//! used by the OpenAI client, which checks the URL it is finally given.

/// Checks a base URL: `https://` anywhere, plain `http://` only to a
/// loopback host (the key would otherwise cross the network in clear):
/// an IP literal in 127.0.0.0/8, `::1`, or `localhost`. The URL is parsed as
/// the HTTP client parses it, so `http://127.0.0.1@host/` (user info) and
/// `http://127.0.0.1.example.com/` are what they are: other hosts. A URL
/// with user info is refused whatever its scheme.
pub fn check_base_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL has a user-info part (`...@` before the host): a base URL names the server and \
                    nothing else, and the part before `@` is not its host"
            .into());
    }
    let Some(host) = parsed.host() else { return Err(format!("`{url}` has no host")) };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&host) => Ok(()),
        "http" => Err(format!(
            "plain http is refused for `{host}`, which is not a loopback host (127.0.0.0/8, ::1, localhost): the API \
             key would cross the network unencrypted"
        )),
        other => Err(format!("unsupported scheme `{other}`")),
    }
}

/// Checks a Ray dashboard's address: `http://` or `https://`, a host, no
/// user info. Plain http to any host is allowed: no key is sent to Ray (its
/// Jobs API takes none), only the rendered command line and its metadata.
pub fn check_ray_address(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the address has a user-info part (`...@` before the host): it names the dashboard and nothing \
                    else"
            .into());
    }
    match parsed.scheme() {
        "http" | "https" if parsed.host().is_some() => Ok(()),
        "http" | "https" => Err(format!("`{url}` has no host")),
        other => Err(format!("unsupported scheme `{other}`: the Ray dashboard speaks http or https")),
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// Why `value` cannot be sent as an HTTP header value, if it cannot: only
/// visible ASCII, spaces and tabs can (a CR or LF would end the header and
/// start another). The value itself is never quoted: it may be a key.
pub fn header_value_problem(value: &str) -> Option<String> {
    let (i, c) = value.chars().enumerate().find(|(_, c)| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t'))?;
    let what = match c {
        '\r' | '\n' => "a line break (CR or LF)".to_string(),
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        _ => "a non-ASCII character".to_string(),
    };
    Some(format!("the value has {what} at character {}, which cannot be sent in an HTTP header", i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_hosts_as_the_client_parses_them() {
        for ok in [
            "https://example.com/v1",
            "https://api.openai.com/v1",
            "http://127.0.0.1:8089/v1",
            "http://127.1.2.3/v1",
            "http://[::1]:80/v1",
            "http://localhost:9/v1",
            "http://LOCALHOST/v1",
        ] {
            assert_eq!(check_base_url(ok), Ok(()), "{ok}");
        }
        // The host is what follows `@`, and `127.0.0.1.example.com` is a name.
        for (bad, says) in [
            ("http://127.0.0.1@otherhost:8000/v1", "user-info"),
            ("http://127.0.0.1:x@otherhost/v1", "user-info"),
            ("http://user@127.0.0.1:8000/v1", "user-info"),
            ("https://user:pw@example.com/v1", "user-info"),
            ("http://127.0.0.1.example.com/v1", "`127.0.0.1.example.com`"),
            ("http://localhost.example.com/v1", "not a loopback host"),
            ("http://128.0.0.1/v1", "not a loopback host"),
            ("http://0.0.0.0:80/v1", "not a loopback host"),
            ("http://[::ffff:7f00:1]/v1", "not a loopback host"),
            ("http://evil\\@127.0.0.1/v1", "not a loopback host"),
            ("ftp://127.0.0.1/v1", "unsupported scheme"),
            ("127.0.0.1:8000/v1", "not a URL"),
        ] {
            let e = check_base_url(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn header_values_must_be_sendable() {
        assert_eq!(header_value_problem("org-AbC_123 x\tz"), None);
        let crlf = header_value_problem("org-1\r\nX-Evil: 1").unwrap();
        assert!(crlf.contains("line break") && crlf.contains("character 6"), "{crlf}");
        assert!(header_value_problem("a\u{0}b").unwrap().contains("U+0000"));
        assert!(header_value_problem("a\u{7f}").unwrap().contains("U+007F"));
        let utf8 = header_value_problem("sk-é-secret").unwrap();
        assert!(utf8.contains("non-ASCII") && !utf8.contains('é') && !utf8.contains("secret"), "{utf8}");
    }
}
