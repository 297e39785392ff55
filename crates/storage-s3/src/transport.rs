//! The HTTP transport of an S3 storage: object_store's requests (credential clients included) and this crate's
//! own go through it. It changes no request. It gives every request an idle timeout instead of a total one: a
//! transfer fails only after `request_timeout` seconds without a byte sent or received, so a slow link that makes
//! progress never times out, and a stalled one is found. It counts the requests sent to the bucket, by kind.

use crate::protocol::RequestKind;
use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse, HttpResponseBody,
    HttpService,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Which attempt at a request this is (0: the first), for the request's log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt(pub(crate) usize);

/// What the transport of one storage knows.
#[derive(Debug)]
pub(crate) struct Transport {
    /// No byte sent or received for this long fails a request; `None`: no limit.
    pub(crate) idle: Option<Duration>,
    /// The `host:port` of the bucket's URL: requests there are counted.
    pub(crate) bucket_authority: String,
    /// `/<bucket>/` with path-style addressing, `/` with virtual hosts: what precedes the key in a URL path.
    pub(crate) key_prefix: String,
    /// Requests sent to the bucket, by kind.
    pub(crate) counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Transport {
    /// Counts `request` (when it goes to the bucket) and returns its kind.
    fn count(&self, request: &HttpRequest) -> &'static str {
        let kind = match request.extensions().get::<RequestKind>() {
            Some(RequestKind(kind)) => kind,
            None => self.read_kind(request),
        };
        if request.uri().authority().map(|a| a.as_str()) == Some(self.bucket_authority.as_str()) {
            *self.counts.lock().unwrap_or_else(PoisonError::into_inner).entry(kind).or_default() += 1;
        }
        kind
    }

    /// The kind of a request object_store sends for this crate: all of them read (GET, HEAD, LIST).
    fn read_kind(&self, request: &HttpRequest) -> &'static str {
        let path = request.uri().path();
        let bucket = path.len() + 1 == self.key_prefix.len() && self.key_prefix.starts_with(path);
        let query = request.uri().query().unwrap_or("");
        let listing = query.split('&').any(|p| p.starts_with("list-type") || p.starts_with("delimiter"));
        match *request.method() {
            Method::GET if listing || bucket || path == self.key_prefix => "LIST",
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            _ => "OTHER",
        }
    }
}

/// Connects object_store (and this crate) through a [`Transport`].
#[derive(Debug)]
pub(crate) struct Connector(pub(crate) Arc<Transport>);

impl HttpConnector for Connector {
    /// A client for `options`: their connect timeout (object_store gives instance metadata a short one) and
    /// proxy; the total timeout is replaced by the transport's idle timeout.
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let generic = |e: reqwest::Error| object_store::Error::Generic { store: "S3", source: Box::new(e) };
        let mut builder = reqwest::Client::builder().tcp_nodelay(true);
        let config = |key| options.get_config_value(&key);
        if let Some(timeout) = config(object_store::ClientConfigKey::ConnectTimeout) {
            let timeout = humantime::parse_duration(&timeout)
                .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
            builder = builder.connect_timeout(timeout);
        }
        if let Some(proxy) = config(object_store::ClientConfigKey::ProxyUrl) {
            builder = builder.proxy(reqwest::Proxy::all(&proxy).map_err(generic)?);
        }
        let client = builder.build().map_err(generic)?;
        Ok(HttpClient::new(Service { client, transport: self.0.clone() }))
    }
}

#[derive(Debug)]
struct Service {
    client: reqwest::Client,
    transport: Arc<Transport>,
}

#[async_trait]
impl HttpService for Service {
    async fn call(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let kind = self.transport.count(&request);
        let attempt = request.extensions().get::<Attempt>().map_or(0, |Attempt(n)| *n);
        let started = Instant::now();
        let answer = self.send(request).await;
        let elapsed_ms = format!("{:.3}", started.elapsed().as_secs_f64() * 1000.0);
        match &answer {
            Ok(response) => {
                let status = response.status().as_u16();
                tracing::debug!(target: "storages", request = kind, attempt, status, %elapsed_ms, "answered");
            }
            Err(error) => {
                let error = describe(error);
                tracing::debug!(target: "storages", request = kind, attempt, %error, %elapsed_ms, "no answer");
            }
        }
        answer
    }
}

impl Service {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let idle = self.transport.idle;
        let (parts, body) = request.into_parts();
        let what = format!("{} {}", parts.method, parts.uri.path());
        let url = reqwest::Url::parse(&parts.uri.to_string()).map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        let progress = Arc::new(Mutex::new(Instant::now()));
        *request.body_mut() =
            Some(reqwest::Body::wrap(Watched { body, progress: progress.clone(), rest: Bytes::new() }));
        let response = self.client.execute(request);
        let response = match idle {
            None => response.await,
            Some(idle) => {
                tokio::pin!(response);
                loop {
                    let last = *progress.lock().unwrap_or_else(PoisonError::into_inner);
                    tokio::select! {
                        response = &mut response => break response,
                        () = tokio::time::sleep_until((last + idle).into()) => {
                            if *progress.lock().unwrap_or_else(PoisonError::into_inner) == last {
                                return Err(stalled(&what, idle));
                            }
                        }
                    }
                }
            }
        };
        let response = response.map_err(classify)?;
        let response: http::Response<reqwest::Body> = response.into();
        let (parts, body) = response.into_parts();
        let body = HttpResponseBody::new(ResponseBody::new(body, idle, what));
        Ok(HttpResponse::from_parts(parts, body))
    }
}

/// A response body that fails after waiting `idle` for a byte, and that reads a large body in fewer, larger
/// pieces.
///
/// The idle timer is armed once and, when it fires, set again from when the body last began to wait if bytes
/// came meanwhile: a fast stream of small frames costs no timer work per frame.
///
/// Pacing: each frame wakes the reading task, and on a multi-thread runtime a wake costs several times what the
/// read itself does (a 256 MiB stream from s3s-fs, which sends ~17 KB at a time, took 2 to 3 times curl's CPU).
/// So after a small frame, while much of the body is still to come, the body waits [`PACE`] from that frame
/// before asking for the next: meanwhile the socket gathers what one read then takes whole. Large frames (a
/// fast sender, or a reader that is slower than the link) are never waited after, and neither the first MiB (a
/// reader's first bytes come as fast as they can) nor the last one (nor a small object) is paced. Nor is a body
/// that came faster than [`PACE_GATHERS`] per pause: a pause would then gather more than one read takes, and
/// stall the sender once the socket's buffer is full (moto's 1.3 GB/s stream lost 8 % to pauses).
struct ResponseBody {
    body: reqwest::Body,
    idle: Option<Duration>,
    /// Since when the body has been waiting for bytes: the last frame, or the first poll after the reader
    /// took a while to ask again (time the reader spends elsewhere is no stall). Tokio's clock, as the timer's.
    last: tokio::time::Instant,
    /// The last poll found no frame.
    waiting: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes received so far, and when the first of them came.
    received: u64,
    first_at: Option<tokio::time::Instant>,
    /// Until when the body lets the socket gather bytes before reading again.
    paced_until: Option<tokio::time::Instant>,
    pace: Option<Pin<Box<tokio::time::Sleep>>>,
    /// What the request was, for the timeout's message.
    what: String,
    /// The body ended with an error.
    done: bool,
}

/// How long a large body lets the socket gather bytes after a small frame (see [`ResponseBody`]).
const PACE: Duration = Duration::from_millis(1);
/// A frame smaller than this is small: the socket held little when it was read.
const SMALL_FRAME: usize = 64 * 1024;
/// The first and the last bytes of a body that are never paced.
const UNPACED: u64 = 1024 * 1024;
/// A body is paced only while it comes at most this fast per [`PACE`] (512 MB/s): about what one read of the
/// HTTP client takes (hyper reads up to ~400 KB at a time).
const PACE_GATHERS: u64 = 512 * 1024;

impl ResponseBody {
    fn new(body: reqwest::Body, idle: Option<Duration>, what: String) -> Self {
        ResponseBody {
            body,
            idle,
            last: tokio::time::Instant::now(),
            waiting: false,
            sleep: None,
            received: 0,
            first_at: None,
            paced_until: None,
            pace: None,
            what,
            done: false,
        }
    }

    /// Ready once the pause after a small frame is over.
    fn poll_pace(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(until) = self.paced_until else { return Poll::Ready(()) };
        let pace = match &mut self.pace {
            Some(pace) => {
                if pace.deadline() != until {
                    pace.as_mut().reset(until);
                }
                pace
            }
            None => self.pace.insert(Box::pin(tokio::time::sleep_until(until))),
        };
        if pace.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.paced_until = None;
        Poll::Ready(())
    }

    /// Ready with a stall error once the body waited `idle` for a byte.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<HttpError> {
        let Some(idle) = self.idle else { return Poll::Pending };
        if !self.waiting {
            self.waiting = true;
            self.last = tokio::time::Instant::now();
        }
        let deadline = self.last + idle;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if tokio::time::Instant::now() >= deadline {
                return Poll::Ready(stalled(&self.what, idle));
            }
            // Bytes came since the timer was set: wait from the last of them.
            sleep.as_mut().reset(deadline);
        }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        // A pause is no stall: the socket is known to be receiving.
        if self.poll_pace(cx).is_pending() {
            return Poll::Pending;
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.waiting = false;
                let len = frame.data_ref().map_or(0, |data| data.len());
                self.received += len as u64;
                let now = tokio::time::Instant::now();
                let first_at = *self.first_at.get_or_insert(now);
                if len < SMALL_FRAME
                    && self.received >= UNPACED
                    && self.body.size_hint().lower() >= UNPACED
                    && slow(self.received, now - first_at)
                {
                    self.paced_until = Some(now + PACE);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(error))) => {
                self.done = true;
                return Poll::Ready(Some(Err(classify(error))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        match self.poll_idle(cx) {
            Poll::Ready(error) => {
                self.done = true;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether `received` bytes in `elapsed` came at most [`PACE_GATHERS`] per [`PACE`].
fn slow(received: u64, elapsed: Duration) -> bool {
    u128::from(received) * PACE.as_nanos() <= u128::from(PACE_GATHERS) * elapsed.as_nanos()
}

/// A request body that records when its last bytes went out. It hands them out in slices of [`SLICE`] bytes:
/// the next slice is asked for only once the connection took the last, so progress is seen as it happens.
struct Watched {
    body: HttpRequestBody,
    progress: Arc<Mutex<Instant>>,
    /// The rest of the frame being handed out.
    rest: Bytes,
}

const SLICE: usize = 64 * 1024;

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        if self.rest.is_empty() {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
        *self.progress.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let size = self.rest.len().min(SLICE);
        Poll::Ready(Some(Ok(http_body::Frame::data(self.rest.split_to(size)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.body.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// The timeout of a request that made no progress.
fn stalled(what: &str, idle: Duration) -> HttpError {
    let message = format!("{what} timed out: no byte sent or received for {} s (request_timeout)", idle.as_secs_f64());
    HttpError::new(HttpErrorKind::Timeout, std::io::Error::new(std::io::ErrorKind::TimedOut, message))
}

/// A reqwest error as object_store's kinds: no connection made, a timeout, or a request cut off.
fn classify(error: reqwest::Error) -> HttpError {
    // A connect timeout is both: nothing was sent, so it is a connection failure.
    let mut kind = if error.is_connect() {
        HttpErrorKind::Connect
    } else if error.is_timeout() {
        HttpErrorKind::Timeout
    } else if error.is_decode() {
        HttpErrorKind::Decode
    } else {
        HttpErrorKind::Unknown
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&error);
    while kind == HttpErrorKind::Unknown {
        let Some(current) = source else { break };
        if let Some(hyper) = current.downcast_ref::<hyper::Error>() {
            if hyper.is_closed() || hyper.is_incomplete_message() || hyper.is_body_write_aborted() {
                kind = HttpErrorKind::Request;
            }
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            match io.kind() {
                Io::TimedOut => kind = HttpErrorKind::Timeout,
                Io::ConnectionAborted | Io::ConnectionReset | Io::BrokenPipe | Io::UnexpectedEof => {
                    kind = HttpErrorKind::Interrupted
                }
                _ => {}
            }
        }
        source = current.source();
    }
    HttpError::new(kind, error.without_url())
}

/// An HTTP error in words: what happened and its causes, no URL (its query may hold a signature).
pub(crate) fn describe(error: &HttpError) -> String {
    let what = match error.kind() {
        HttpErrorKind::Connect => "could not connect",
        HttpErrorKind::Timeout => "timed out",
        HttpErrorKind::Interrupted | HttpErrorKind::Request => "was cut off",
        _ => "failed",
    };
    format!("{what}: {}", crate::bucket::error_chain(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> Transport {
        Transport {
            idle: None,
            bucket_authority: "h:9000".into(),
            key_prefix: "/bucket/".into(),
            counts: Default::default(),
        }
    }

    fn request(method: Method, uri: &str) -> HttpRequest {
        http::Request::builder().method(method).uri(uri).body(HttpRequestBody::empty()).unwrap()
    }

    /// The idle timeout counts the time a body waits for bytes, not the time its reader spends elsewhere.
    #[tokio::test(start_paused = true)]
    async fn an_idle_body_fails_only_after_waiting_its_whole_timeout() {
        use http_body_util::BodyExt;
        let (sender, receiver) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        let mut body =
            ResponseBody::new(reqwest::Body::wrap_stream(receiver), Some(Duration::from_secs(10)), "GET /k".into());
        sender.unbounded_send(Ok(Bytes::from("a"))).unwrap();
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "a");
        // The reader is away for a minute, then bytes come every 9 s for a minute: no stall.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let feeder = sender.clone();
        tokio::spawn(async move {
            for _ in 0..7 {
                tokio::time::sleep(Duration::from_secs(9)).await;
                feeder.unbounded_send(Ok(Bytes::from("b"))).unwrap();
            }
        });
        for _ in 0..7 {
            assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "b");
        }
        // Then nothing: the stall, once, after 10 s.
        let waited = tokio::time::Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(waited.elapsed(), Duration::from_secs(10));
        assert_eq!(error.kind(), HttpErrorKind::Timeout);
        assert!(error.to_string().contains("GET /k timed out"), "{error}");
        assert!(body.frame().await.is_none(), "the body ends with its error");
        drop(sender);
    }

    /// Frames of a known-length body, ready at once.
    struct Ready {
        frames: std::collections::VecDeque<Bytes>,
    }

    impl http_body::Body for Ready {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.frames.pop_front().map(|data| Ok(http_body::Frame::data(data))))
        }

        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.frames.iter().map(|f| f.len() as u64).sum())
        }
    }

    /// Frames of 16 KiB with a large one at the 2nd, 5th and 7th place: 3.3 MiB.
    fn paced_body() -> ResponseBody {
        let sizes = [
            16 * 1024,
            1024 * 1024,
            16 * 1024,
            16 * 1024,
            256 * 1024,
            16 * 1024,
            2 * 1024 * 1024,
            16 * 1024,
            16 * 1024,
        ];
        let frames = sizes.iter().map(|&n| Bytes::from(vec![7u8; n])).collect();
        ResponseBody::new(reqwest::Body::wrap(Ready { frames }), None, "GET /k".into())
    }

    /// The length of the frame `body` has at once; `None`: it waits.
    fn next(body: &mut ResponseBody) -> Option<usize> {
        use futures::FutureExt;
        use http_body_util::BodyExt;
        body.frame().now_or_never().map(|f| f.unwrap().unwrap().into_data().unwrap().len())
    }

    /// After a small frame, past the first MiB and with more than a MiB to come, a body that comes slowly lets
    /// the socket gather bytes for `PACE`; after a large frame, in the first MiB and in the last, it reads on at
    /// once.
    #[tokio::test(start_paused = true)]
    async fn a_slow_large_body_waits_after_a_small_frame_and_nothing_else_does() {
        use http_body_util::BodyExt;
        let mut body = paced_body();
        // Small frames in the first MiB are not waited after.
        assert_eq!(next(&mut body), Some(16 * 1024));
        // The body comes at about 10 MB/s.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(next(&mut body), Some(1024 * 1024));
        assert_eq!(next(&mut body), Some(16 * 1024));
        // A small frame past the first MiB, with 2.3 MiB to come: the next one waits, though it is ready.
        assert_eq!(next(&mut body), None);
        tokio::time::advance(PACE - Duration::from_micros(1)).await;
        assert_eq!(next(&mut body), None);
        tokio::time::advance(Duration::from_micros(1)).await;
        assert_eq!(next(&mut body), Some(16 * 1024));
        tokio::time::advance(PACE).await;
        assert_eq!(next(&mut body), Some(256 * 1024));
        // After a large frame: no wait.
        assert_eq!(next(&mut body), Some(16 * 1024));
        tokio::time::advance(PACE).await;
        assert_eq!(next(&mut body), Some(2 * 1024 * 1024));
        // Less than a MiB to come: never paced.
        assert_eq!(next(&mut body), Some(16 * 1024));
        assert_eq!(next(&mut body), Some(16 * 1024));
        assert!(body.frame().await.is_none());
    }

    /// A body that comes faster than a pause would let the socket hold is never paced.
    #[tokio::test(start_paused = true)]
    async fn a_fast_body_is_never_paced() {
        use http_body_util::BodyExt;
        let mut body = paced_body();
        for frame in 0..9 {
            assert!(next(&mut body).is_some(), "frame {frame} waited");
        }
        assert!(body.frame().await.is_none());
    }

    #[test]
    fn only_bucket_requests_are_counted_and_marked_ones_by_their_mark() {
        let transport = transport();
        transport.count(&request(Method::PUT, "http://169.254.169.254/latest/api/token"));
        transport.count(&request(Method::GET, "http://h:9000/bucket/a.txt"));
        transport.count(&request(Method::GET, "http://h:9000/bucket?list-type=2&prefix=a"));
        let mut marked = request(Method::PUT, "http://h:9000/bucket/a.txt");
        marked.extensions_mut().insert(RequestKind("PUT"));
        transport.count(&marked);
        let counts = transport.counts.lock().unwrap().clone();
        assert_eq!(counts, [("GET", 1), ("LIST", 1), ("PUT", 1)].into());
    }
}
