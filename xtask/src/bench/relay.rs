//! A byte-counting TCP relay on loopback, between the builders and the
//! registry, for the `ci` mode's "bytes downloaded and uploaded".
//!
//! It counts every byte each way, and follows HTTP/1.1 framing (lengths,
//! chunks, `HEAD`, 1xx) so it can tell layer bytes from the rest: a message
//! body that starts with `{` is JSON (a manifest, a config, a registry error),
//! any other body is layer data. A stream it cannot follow counts all its
//! remaining bytes as layer bytes, so layers are never under-counted.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};

/// Longest request or response head the relay follows.
const MAX_HEAD: usize = 64 << 10;

/// Bytes moved through the relay since it was last taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Registry to builder, everything on the wire.
    pub down: u64,
    /// Builder to registry, everything on the wire.
    pub up: u64,
    /// Of `down`, the bodies that are layer data.
    pub layers_down: u64,
    /// Of `up`, the bodies that are layer data.
    pub layers_up: u64,
}

impl Traffic {
    /// Both together (a run's commands one after the other).
    pub fn plus(self, other: Traffic) -> Traffic {
        Traffic {
            down: self.down + other.down,
            up: self.up + other.up,
            layers_down: self.layers_down + other.layers_down,
            layers_up: self.layers_up + other.layers_up,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    down: AtomicU64,
    up: AtomicU64,
    layers_down: AtomicU64,
    layers_up: AtomicU64,
    /// Streams whose framing the relay lost.
    lost: AtomicU64,
}

/// A relay listening on 127.0.0.1, forwarding every connection to `target`.
pub struct Relay {
    port: u16,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`.
    pub fn start(target: SocketAddr) -> Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding the relay")?;
        let port = listener.local_addr().context("the relay's address")?.port();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::clone(&counters), Arc::clone(&stop));
        std::thread::spawn(move || accept_loop(&listener, target, &c, &s));
        Ok(Relay {
            port,
            counters,
            stop,
        })
    }

    /// `127.0.0.1:PORT`, the registry host to give the builders.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What moved since the last call, and starts counting again from zero.
    pub fn take(&self) -> Traffic {
        let c = &self.counters;
        Traffic {
            down: c.down.swap(0, Ordering::SeqCst),
            up: c.up.swap(0, Ordering::SeqCst),
            layers_down: c.layers_down.swap(0, Ordering::SeqCst),
            layers_up: c.layers_up.swap(0, Ordering::SeqCst),
        }
    }

    /// How many streams were not HTTP the relay could follow (their bytes counted as layers).
    pub fn lost_streams(&self) -> u64 {
        self.counters.lost.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

fn accept_loop(
    listener: &TcpListener,
    target: SocketAddr,
    counters: &Arc<Counters>,
    stop: &AtomicBool,
) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        let methods = Arc::new(Mutex::new(VecDeque::new()));
        let up = Framer::new(Side::Request, Arc::clone(&methods));
        let down = Framer::new(Side::Response, methods);
        let (cu, cd) = (Arc::clone(counters), Arc::clone(counters));
        std::thread::spawn(move || pump(client, server, up, &cu));
        std::thread::spawn(move || pump(server2, client2, down, &cd));
    }
}

/// Copies `from` to `to`, counting as it goes, until either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, mut framer: Framer, counters: &Counters) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let layer = framer.feed(&buf[..n]);
        // Counted before it is passed on: once the builder has seen a byte, it is counted.
        let (total, layers) = match framer.side {
            Side::Request => (&counters.up, &counters.layers_up),
            Side::Response => (&counters.down, &counters.layers_down),
        };
        total.fetch_add(n as u64, Ordering::SeqCst);
        layers.fetch_add(layer, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    if framer.lost {
        counters.lost.fetch_add(1, Ordering::SeqCst);
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Builder to registry.
    Request,
    /// Registry to builder.
    Response,
}

/// What a body holds, known from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Json,
    Layer,
}

#[derive(Debug)]
enum State {
    /// Reading a start line and headers.
    Head(Vec<u8>),
    /// `n` more body bytes.
    Body(u64),
    /// A chunk-size line.
    ChunkSize(Vec<u8>),
    /// `n` more bytes of a chunk, then its CRLF.
    Chunk(u64),
    /// The CRLF after a chunk's data: bytes still to skip.
    ChunkEnd(u8),
    /// After the last chunk: trailer lines up to an empty one.
    Trailer(Vec<u8>),
    /// A response body that ends when the connection does.
    UntilClose,
}

/// Follows one direction of an HTTP/1.1 connection.
struct Framer {
    side: Side,
    /// Methods of the requests not yet answered (a HEAD response has no body).
    methods: Arc<Mutex<VecDeque<String>>>,
    state: State,
    /// The current body's class, once its first byte was seen.
    class: Option<Class>,
    lost: bool,
}

impl Framer {
    fn new(side: Side, methods: Arc<Mutex<VecDeque<String>>>) -> Self {
        Framer {
            side,
            methods,
            state: State::Head(Vec::new()),
            class: None,
            lost: false,
        }
    }

    /// Consumes `bytes` and returns how many of them are layer data.
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut layer = 0;
        while !bytes.is_empty() {
            if self.lost {
                return layer + bytes.len() as u64;
            }
            let used = match &mut self.state {
                State::Head(head) => {
                    let used = take_until(head, bytes, b"\r\n\r\n");
                    if head.ends_with(b"\r\n\r\n") {
                        let head = std::mem::take(head);
                        self.state = self.after_head(&head);
                    } else if head.len() > MAX_HEAD {
                        self.lost = true;
                    }
                    used
                }
                State::Body(remaining) => {
                    let used =
                        usize::try_from(*remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                    layer += self.body(&bytes[..used]);
                    if let State::Body(remaining) = &mut self.state {
                        *remaining -= used as u64;
                        if *remaining == 0 {
                            self.message_done();
                        }
                    }
                    used
                }
                State::ChunkSize(line) => {
                    let used = take_until(line, bytes, b"\r\n");
                    if line.ends_with(b"\r\n") {
                        let size = std::str::from_utf8(&line[..line.len() - 2])
                            .ok()
                            .and_then(|l| l.split(';').next())
                            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
                        self.state = match size {
                            Some(0) => State::Trailer(Vec::new()),
                            Some(n) => State::Chunk(n),
                            None => {
                                self.lost = true;
                                State::UntilClose
                            }
                        };
                    } else if line.len() > MAX_HEAD {
                        self.lost = true;
                    }
                    used
                }
                State::Chunk(remaining) => {
                    let used =
                        usize::try_from(*remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                    let left = *remaining - used as u64;
                    layer += self.body(&bytes[..used]);
                    self.state = if left == 0 {
                        State::ChunkEnd(2)
                    } else {
                        State::Chunk(left)
                    };
                    used
                }
                State::ChunkEnd(left) => {
                    let used = usize::from(*left).min(bytes.len());
                    *left -= used as u8;
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                    used
                }
                State::Trailer(lines) => {
                    let used = take_until(lines, bytes, b"\r\n");
                    if lines.as_slice() == b"\r\n" || lines.ends_with(b"\r\n\r\n") {
                        self.message_done();
                    } else if lines.len() > MAX_HEAD {
                        self.lost = true;
                    }
                    used
                }
                State::UntilClose => {
                    layer += self.body(bytes);
                    bytes.len()
                }
            };
            bytes = &bytes[used..];
        }
        layer
    }

    /// Classifies body bytes (the first byte decides for the whole body).
    fn body(&mut self, bytes: &[u8]) -> u64 {
        let class = *self.class.get_or_insert(match bytes.first() {
            Some(b'{') => Class::Json,
            _ => Class::Layer,
        });
        if class == Class::Layer {
            bytes.len() as u64
        } else {
            0
        }
    }

    fn message_done(&mut self) {
        self.class = None;
        self.state = State::Head(Vec::new());
    }

    /// The state after a complete head: what body follows it.
    fn after_head(&mut self, head: &[u8]) -> State {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default();
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<u64>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        let mut methods = self.methods.lock().unwrap_or_else(PoisonError::into_inner);
        let has_body = match self.side {
            Side::Request => {
                methods.push_back(start.split(' ').next().unwrap_or_default().to_owned());
                true
            }
            Side::Response => {
                let status: u16 = start
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if (100..200).contains(&status) {
                    // An interim answer: the request is still open.
                    return State::Head(Vec::new());
                }
                let method = methods.pop_front().unwrap_or_default();
                if status == 0 {
                    self.lost = true;
                }
                method != "HEAD" && status != 204 && status != 304
            }
        };
        match (has_body, chunked, length) {
            (false, _, _) | (true, false, Some(0)) => State::Head(Vec::new()),
            (true, true, _) => State::ChunkSize(Vec::new()),
            (true, false, Some(n)) => State::Body(n),
            (true, false, None) if self.side == Side::Response => State::UntilClose,
            (true, false, None) => State::Head(Vec::new()),
        }
    }
}

/// Appends `bytes` to `buf` up to and including the first `end` that completes
/// in `buf`; returns how many bytes of `bytes` it took.
fn take_until(buf: &mut Vec<u8>, bytes: &[u8], end: &[u8]) -> usize {
    for (i, &b) in bytes.iter().enumerate() {
        buf.push(b);
        if buf.ends_with(end) {
            return i + 1;
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::{Framer, Relay, Side, Traffic};
    use std::collections::VecDeque;
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    fn pair() -> (Framer, Framer) {
        let methods = Arc::new(Mutex::new(VecDeque::new()));
        (
            Framer::new(Side::Request, Arc::clone(&methods)),
            Framer::new(Side::Response, methods),
        )
    }

    /// Feeds `bytes` one byte at a time, as the worst split a socket could give.
    fn trickle(framer: &mut Framer, bytes: &[u8]) -> u64 {
        bytes.chunks(1).map(|b| framer.feed(b)).sum()
    }

    #[test]
    fn layer_bodies_are_told_from_json_and_heads() {
        let (mut up, mut down) = pair();
        let layer = [0x1f_u8, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6];
        assert_eq!(
            up.feed(b"HEAD /v2/a/blobs/sha256:1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            0
        );
        // A HEAD answer names the length of a body it does not send.
        assert_eq!(
            down.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
            0
        );
        assert_eq!(up.feed(b"GET /v2/a/manifests/x HTTP/1.1\r\n\r\n"), 0);
        let mut json = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}".to_vec();
        json.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        json.extend_from_slice(&layer);
        assert_eq!(up.feed(b"GET /v2/a/blobs/sha256:2 HTTP/1.1\r\n\r\n"), 0);
        assert_eq!(trickle(&mut down, &json), 10);
        assert!(!down.lost && !up.lost);
    }

    #[test]
    fn chunked_uploads_and_interim_answers_are_followed() {
        let (mut up, mut down) = pair();
        let mut request = b"PATCH /v2/a/blobs/uploads/u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".to_vec();
        request.extend_from_slice(b"4\r\n\x1f\x8b\x08\x00\r\n3;ext=1\r\nabc\r\n0\r\n\r\n");
        request.extend_from_slice(b"PUT /v2/a/manifests/t HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(trickle(&mut up, &request), 7);
        assert_eq!(down.feed(b"HTTP/1.1 100 Continue\r\n\r\n"), 0);
        assert_eq!(
            down.feed(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"),
            0
        );
        assert_eq!(
            down.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
            0
        );
        assert!(down.methods.lock().is_ok_and(|m| m.is_empty()));
        assert!(!down.lost && !up.lost);
    }

    #[test]
    fn a_stream_that_is_not_http_counts_as_layers() {
        let (_, mut down) = pair();
        assert_eq!(down.feed(b"SSH-2.0-x\r\n\r\nabc"), 3);
        assert!(down.lost);
    }

    #[test]
    fn the_relay_forwards_and_counts_both_ways() -> anyhow::Result<()> {
        let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let target = server.local_addr()?;
        let answer = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
            let (mut conn, _) = server.accept()?;
            let mut request = vec![0u8; 43];
            conn.read_exact(&mut request)?;
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nDATA")?;
            Ok(request)
        });
        let relay = Relay::start(target)?;
        let mut client = TcpStream::connect(relay.host())?;
        let request = b"GET /v2/x/blobs/sha256:0 HTTP/1.1\r\nA: b\r\n\r\n";
        client.write_all(request)?;
        let mut response = vec![0u8; 42];
        client.read_exact(&mut response)?;
        let received = answer
            .join()
            .map_err(|_| anyhow::anyhow!("server panicked"))??;
        assert_eq!(received, request);
        assert!(response.ends_with(b"DATA"));
        assert_eq!(
            relay.take(),
            Traffic {
                down: 42,
                up: 43,
                layers_down: 4,
                layers_up: 0
            }
        );
        assert_eq!(relay.take(), Traffic::default());
        Ok(())
    }
}
