//! `healthcheck`: one HTTP GET to the daemon's own endpoint, for container platforms
//! whose health checks run a command (ECS) in images that have no curl (this one is
//! built `FROM scratch`). Plain HTTP/1.1 over a socket: the daemon serves nothing else.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `http://HOST:PORT/PATH` split into (host, port, path).
pub fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("{url:?}: {p:?} is not a port"))?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_owned(), port, path.to_owned()))
}

/// GETs `url` and returns its status code, within `timeout` for each step.
pub fn check(url: &str, timeout: Duration) -> Result<u16, String> {
    let (host, port, path) = parse_url(url)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(|e| format!("no answer from {addr}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr} did not answer HTTP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(parse_url("http://127.0.0.1:8080/healthz"), Ok(("127.0.0.1".into(), 8080, "/healthz".into())));
        assert_eq!(parse_url("http://localhost"), Ok(("localhost".into(), 80, "/".into())));
        assert_eq!(parse_url("http://[::1]:9/readyz"), Ok(("::1".into(), 9, "/readyz".into())));
        assert!(parse_url("https://x/healthz").unwrap_err().contains("not an http:// URL"));
        assert!(parse_url("http://x:port/").unwrap_err().contains("not a port"));
        assert!(parse_url("http://:80/").unwrap_err().contains("no host"));
    }

    #[test]
    fn a_closed_port_is_an_error_not_a_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = check(&format!("http://127.0.0.1:{port}/healthz"), Duration::from_secs(2)).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
    }
}
