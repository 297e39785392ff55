//! A loopback HTTP/1.1 proxy between a storage and its server that misbehaves on purpose: it throttles, loses
//! answers, resets connections, refuses requests or drops a header, each for the requests a rule picks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the proxy does to the requests a [`Rule`] picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards the request; its answer never reaches the client (which times out).
    LoseAnswer,
    /// Forwards the request; when the answer starts, resets the client's connection.
    ResetAfterForwarding,
    /// Answers this status and S3 error code without forwarding.
    Respond(u16, &'static str),
    /// Forwards the request; once the server answered, answers this status and S3 error code instead, and closes
    /// the connection (a gateway that failed after its upstream did the work).
    ReplaceAnswer(u16, &'static str),
    /// Forwards the request without its `If-None-Match` header.
    DropIfNoneMatch,
    /// Holds the request until this many requests of the rule arrived, then forwards them all at once.
    Gate(usize),
    /// Forwards the request; forwards this many bytes of the answer (its head included), then closes the
    /// connection: a body cut short.
    CutAnswer(usize),
    /// Forwards the request; forwards the answer with a `Content-Length` this many bytes smaller and its body
    /// shortened to match, then closes: a well-formed answer that holds less than it says (its other headers,
    /// such as `Content-Range`, unchanged).
    ShortenAnswer(usize),
    /// Resets the connection once the request's head arrived, before its body: nothing reaches the server.
    ResetBeforeBody,
    /// With this percent chance, one of [`RANDOM_FAULTS`], picked at random; otherwise forwards.
    Random(u8),
}

/// What [`Fault::Random`] picks from: a busy service (503 SlowDown, 500), resets before and after the server
/// got the request, a stall (the client's `request_timeout` ends it), and a 200 whose body is an error.
pub const RANDOM_FAULTS: [Fault; 6] = [
    Fault::Respond(503, "SlowDown"),
    Fault::Respond(500, "InternalError"),
    Fault::ResetBeforeBody,
    Fault::ResetAfterForwarding,
    Fault::LoseAnswer,
    Fault::ReplaceAnswer(200, "InternalError"),
];

/// Which requests a fault applies to: method (`""`: any), a piece of the request target, and which occurrences
/// (from 1).
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub target_contains: &'static str,
    /// The occurrences the fault applies to; empty: all.
    pub occurrences: Vec<usize>,
    pub fault: Fault,
}

/// A running proxy; dropped, it stops accepting.
pub struct Proxy {
    pub endpoint: String,
    /// How many requests each rule matched.
    pub matched: Arc<Vec<AtomicUsize>>,
    /// How many faults [`Fault::Random`] injected.
    pub injected: Arc<AtomicUsize>,
    /// The head (request line and headers) of every request that went through, in order.
    pub heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Config {
    upstream: String,
    rules: Vec<Rule>,
    /// A barrier per rule whose fault is a gate.
    gates: Vec<Option<Arc<tokio::sync::Barrier>>>,
    matched: Arc<Vec<AtomicUsize>>,
    injected: Arc<AtomicUsize>,
    /// Bytes per second in each direction; `None`: as fast as it goes.
    rate: Option<usize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// A proxy to `upstream` (`http://host:port`) applying `rules`, throttled to `rate` bytes/s if given.
    pub async fn start(upstream: &str, rules: Vec<Rule>, rate: Option<usize>) -> Proxy {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if rate.is_some() {
            // A throttled link buffers little: what the client sent is what went through.
            socket.set_recv_buffer_size(16 * 1024).expect("buffer size");
        }
        socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind the proxy");
        let listener = socket.listen(64).expect("listen");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let matched: Arc<Vec<AtomicUsize>> = Arc::new(rules.iter().map(|_| AtomicUsize::new(0)).collect());
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let gates = rules
            .iter()
            .map(|rule| match rule.fault {
                Fault::Gate(n) => Some(Arc::new(tokio::sync::Barrier::new(n))),
                _ => None,
            })
            .collect();
        let injected = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let config = Arc::new(Config {
            upstream,
            rules,
            gates,
            matched: matched.clone(),
            injected: injected.clone(),
            rate,
            heads: heads.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let config = config.clone();
                tokio::spawn(async move {
                    let _ = connection(client, config).await;
                });
            }
        });
        Proxy { endpoint, matched, injected, heads, task }
    }

    /// How many requests rule `index` matched.
    pub fn matched(&self, index: usize) -> usize {
        self.matched[index].load(Ordering::SeqCst)
    }
}

/// What the server-to-client direction does with the answer in progress.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Forward,
    Lose,
    Reset,
    Replace(u16, &'static str),
    /// Forwards this many more bytes, then closes.
    Cut(usize),
    /// Shortens the answer's body by this many bytes (see [`Fault::ShortenAnswer`]).
    Shorten(usize),
}

async fn connection(client: TcpStream, config: Arc<Config>) -> std::io::Result<()> {
    let server = TcpStream::connect(&config.upstream).await?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let answer = Arc::new(Mutex::new(Answer::Forward));
    let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
    // Either direction ending ends the connection (a reset included: every half is dropped then).
    tokio::select! {
        result = requests(client_read, server_write, client_write.clone(), answer.clone(), &config) => result,
        result = answers(server_read, client_write, answer, config.rate) => result,
    }
}

/// The client-to-server direction, request by request.
async fn requests(
    mut client_read: tokio::net::tcp::OwnedReadHalf,
    mut server_write: tokio::net::tcp::OwnedWriteHalf,
    client_write: Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>,
    answer: Arc<Mutex<Answer>>,
    config: &Config,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        // One request head, then its body by Content-Length.
        let head_end = loop {
            if let Some(end) = find(&buffer, b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = client_read.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        config.heads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(head.clone());
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("").to_owned();
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let length: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Every rule counts every request it matches; the first one whose occurrence this is applies.
        let applying: Vec<(usize, Fault)> = config
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| {
                (rule.method.is_empty() || rule.method == method) && target.contains(rule.target_contains)
            })
            .filter_map(|(i, rule)| {
                let occurrence = config.matched[i].fetch_add(1, Ordering::SeqCst) + 1;
                (rule.occurrences.is_empty() || rule.occurrences.contains(&occurrence)).then_some((i, rule.fault))
            })
            .collect();
        let fault = match applying.first().map(|(_, fault)| *fault) {
            Some(Fault::Random(percent)) if fastrand::u8(0..100) < percent => {
                config.injected.fetch_add(1, Ordering::SeqCst);
                Some(RANDOM_FAULTS[fastrand::usize(0..RANDOM_FAULTS.len())])
            }
            Some(Fault::Random(_)) => None,
            fault => fault,
        };
        if let Some((i, Fault::Gate(_))) = applying.first() {
            if let Some(gate) = &config.gates[*i] {
                gate.wait().await;
            }
        }
        let mut head_bytes = buffer[..head_end].to_vec();
        buffer.drain(..head_end);
        if fault == Some(Fault::DropIfNoneMatch) {
            let kept: Vec<&str> =
                head.split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("if-none-match:")).collect();
            head_bytes = kept.join("\r\n").into_bytes();
        }
        if fault == Some(Fault::ResetBeforeBody) {
            let client = client_write.lock().await;
            let stream: &TcpStream = (*client).as_ref();
            let _ = stream.set_zero_linger();
            // Dropping the proxy's halves now closes the connection with RST.
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        if let Some(Fault::Respond(status, code)) = fault {
            // Read (and drop) the body, answer, and go on with the next request.
            while buffer.len() < length {
                let mut chunk = [0u8; 16 * 1024];
                let n = client_read.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            buffer.drain(..length);
            client_write.lock().await.write_all(synthetic(status, code, false).as_bytes()).await?;
            continue;
        }
        *answer.lock().expect("answer") = match fault {
            Some(Fault::LoseAnswer) => Answer::Lose,
            Some(Fault::ResetAfterForwarding) => Answer::Reset,
            Some(Fault::ReplaceAnswer(status, code)) => Answer::Replace(status, code),
            Some(Fault::CutAnswer(bytes)) => Answer::Cut(bytes),
            Some(Fault::ShortenAnswer(bytes)) => Answer::Shorten(bytes),
            _ => Answer::Forward,
        };
        send(&mut server_write, &head_bytes, config.rate).await?;
        let mut remaining = length;
        let from_buffer = remaining.min(buffer.len());
        send(&mut server_write, &buffer[..from_buffer], config.rate).await?;
        buffer.drain(..from_buffer);
        remaining -= from_buffer;
        while remaining > 0 {
            let mut chunk = vec![0u8; remaining.min(64 * 1024)];
            let n = client_read.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            send(&mut server_write, &chunk[..n], config.rate).await?;
            remaining -= n;
        }
    }
}

/// The server-to-client direction.
async fn answers(
    mut server: tokio::net::tcp::OwnedReadHalf,
    client: Arc<tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>>,
    answer: Arc<Mutex<Answer>>,
    rate: Option<usize>,
) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = server.read(&mut chunk).await?;
        let mode = *answer.lock().expect("answer");
        if n == 0 {
            if mode == Answer::Lose {
                // The client waits for an answer that never comes, until it gives up.
                std::future::pending::<()>().await;
            }
            let _ = client.lock().await.shutdown().await;
            return Ok(());
        }
        match mode {
            Answer::Forward => send(&mut *client.lock().await, &chunk[..n], rate).await?,
            Answer::Lose => {}
            Answer::Shorten(by) => {
                // The head, whole, then a new Content-Length and as much of the body as that says.
                let mut answer_bytes = chunk[..n].to_vec();
                while find(&answer_bytes, b"\r\n\r\n").is_none() {
                    let n = server.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    answer_bytes.extend_from_slice(&chunk[..n]);
                }
                let head_end = find(&answer_bytes, b"\r\n\r\n").map_or(0, |end| end + 4);
                let head = String::from_utf8_lossy(&answer_bytes[..head_end]).into_owned();
                let mut length = 0usize;
                let lines: Vec<String> = head
                    .split("\r\n")
                    .map(|line| match line.to_ascii_lowercase().strip_prefix("content-length:") {
                        Some(value) => {
                            length = value.trim().parse::<usize>().unwrap_or(0).saturating_sub(by);
                            format!("Content-Length: {length}")
                        }
                        None => line.to_owned(),
                    })
                    .collect();
                let mut out = lines.join("\r\n").into_bytes();
                let mut body = answer_bytes[head_end..].to_vec();
                while body.len() < length {
                    let n = server.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(length);
                out.extend_from_slice(&body);
                let mut client = client.lock().await;
                client.write_all(&out).await?;
                let _ = client.shutdown().await;
                return Ok(());
            }
            Answer::Cut(left) => {
                let forwarded = n.min(left);
                send(&mut *client.lock().await, &chunk[..forwarded], rate).await?;
                if forwarded == left {
                    let _ = client.lock().await.shutdown().await;
                    return Ok(());
                }
                *answer.lock().expect("answer") = Answer::Cut(left - forwarded);
            }
            Answer::Replace(status, code) => {
                client.lock().await.write_all(synthetic(status, code, true).as_bytes()).await?;
                return Ok(());
            }
            Answer::Reset => {
                let client = client.lock().await;
                let stream: &TcpStream = (*client).as_ref();
                let _ = stream.set_zero_linger();
                // Dropping the proxy's halves now closes the connection with RST.
                return Err(std::io::ErrorKind::ConnectionReset.into());
            }
        }
    }
}

/// Writes `bytes`, at `rate` bytes per second if given (in tenths of a second).
async fn send(to: &mut (impl AsyncWriteExt + Unpin), bytes: &[u8], rate: Option<usize>) -> std::io::Result<()> {
    let Some(rate) = rate else { return to.write_all(bytes).await };
    let slice = (rate / 10).max(1);
    for piece in bytes.chunks(slice) {
        to.write_all(piece).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// An S3 error answer made up by the proxy.
fn synthetic(status: u16, code: &str, close: bool) -> String {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>from the proxy</Message></Error>"
    );
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {code}\r\nContent-Type: application/xml\r\n{connection}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
