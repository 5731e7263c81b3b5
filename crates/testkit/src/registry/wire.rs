//! One connection's HTTP: the request read, and the bodies, statuses, tunnels and
//! trickles written back.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::Request;

/// `bytes=a-b` or `bytes=a-` against a body of `len` bytes: the half-open range.
fn parse_range(h: &str, len: usize) -> Option<(usize, usize)> {
    let r = h.strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let a: usize = a.trim().parse().ok()?;
    let b: usize = if b.trim().is_empty() {
        len - 1
    } else {
        b.trim().parse().ok()?
    };
    (a <= b && a < len).then_some((a, (b + 1).min(len)))
}

/// The request line and headers. As a proxy, an absolute-form target is answered as if we
/// were its origin, and a `CONNECT` names the tunnel's far end.
pub(super) fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let target = words.next().unwrap_or("/").to_string();
    let (proxied_to, target) = match target.strip_prefix("http://") {
        Some(rest) => {
            let (auth, p) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let p = if p.is_empty() { "/" } else { p };
            (Some(auth.to_string()), p.to_string())
        }
        None if method == "CONNECT" => (Some(target.clone()), String::new()),
        None => (None, target),
    };
    let path = target.split('?').next().unwrap().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some(Request {
        method,
        proxied_to,
        path,
        headers,
    })
}

/// A `CONNECT` tunnel to `to`, both ways until either side closes.
pub(super) fn tunnel(mut conn: TcpStream, to: &str) {
    let Ok(upstream) = TcpStream::connect(to) else {
        let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    let (mut a, mut b) = (conn.try_clone().unwrap(), upstream.try_clone().unwrap());
    let (mut c, mut d) = (conn, upstream);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b);
        let _ = b.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut d, &mut c);
}

/// The whole `body`, `piece` bytes every `every`, until the client goes away.
pub(super) fn trickle(mut conn: TcpStream, body: &[u8], piece: usize, every: Duration) {
    let head = head("200 OK", "application/octet-stream", body.len(), "");
    let _ = conn.write_all(head.as_bytes());
    for part in body.chunks(piece.max(1)) {
        std::thread::sleep(every);
        if conn.write_all(part).and_then(|_| conn.flush()).is_err() {
            break;
        }
    }
}

/// An injected error status, with `Retry-After` if given.
pub(super) fn inject_status(mut conn: TcpStream, code: u16, retry_after: Option<u64>) {
    let ra = retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    let body = br#"{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}"#;
    let _ = conn.write_all(
        format!(
            "HTTP/1.1 {code} Injected\r\n{ra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let _ = conn.write_all(body);
}

pub(super) fn head(status: &str, content_type: &str, len: usize, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{extra}Connection: close\r\n\r\n")
}

/// A body, or the part a `Range` asks for (when `ranged`), cut after `truncate` bytes.
/// Returns the body bytes written, or None if the client went away before the body.
pub(super) fn send_body(
    conn: &mut TcpStream,
    content_type: &str,
    body: &[u8],
    range: Option<&str>,
    ranged: bool,
    truncate: Option<(usize, bool)>,
) -> Option<usize> {
    let (status, range, extra) = match range.and_then(|h| parse_range(h, body.len())) {
        Some((a, b)) if ranged => (
            "206 Partial Content",
            a..b,
            format!("Content-Range: bytes {a}-{}/{}\r\n", b - 1, body.len()),
        ),
        _ => (
            "200 OK",
            0..body.len(),
            String::from(if ranged {
                "Accept-Ranges: bytes\r\n"
            } else {
                ""
            }),
        ),
    };
    let data = &body[range];
    conn.write_all(head(status, content_type, data.len(), &extra).as_bytes())
        .ok()?;
    let n = truncate.map_or(data.len(), |(n, _)| n.min(data.len()));
    conn.write_all(&data[..n]).ok().map(|()| n)
}
