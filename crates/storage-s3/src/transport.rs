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
    /// A client for `options`: their connect timeout (object_store gives instance metadata a short one), proxy
    /// and HTTPS-only unless HTTP is allowed (so no redirect leads an https endpoint to plain HTTP); the total
    /// timeout is replaced by the transport's idle timeout. Bodies are never decompressed, whatever features of
    /// reqwest another crate of the build turns on: an object stored gzipped is read as stored (a read
    /// decompresses it itself, and its size is the stored one).
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let generic = |e: reqwest::Error| object_store::Error::Generic { store: "S3", source: Box::new(e) };
        let config = |key| options.get_config_value(&key);
        let allow_http = config(object_store::ClientConfigKey::AllowHttp).is_some_and(|v| v == "true");
        // TLS information on each response tells pacing which bodies came over TLS (see `Pacing::applies`).
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .tls_info(true)
            .https_only(!allow_http)
            .no_gzip()
            .no_brotli()
            .no_zstd()
            .no_deflate();
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
        let tls = response.extensions().get::<reqwest::tls::TlsInfo>().is_some();
        let pacing = Pacing::new(Pacing::applies(response.url(), response.version(), tls));
        let response: http::Response<reqwest::Body> = response.into();
        let (parts, body) = response.into_parts();
        let body = HttpResponseBody::new(ResponseBody::new(body, idle, what, pacing));
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
/// So after a small frame the body waits [`PACE`] before asking for the next (1 to 2 ms: tokio's timer ticks in
/// milliseconds), and meanwhile the socket gathers what one read then takes whole. See [`Pacing`] for when.
struct ResponseBody {
    body: reqwest::Body,
    idle: Option<Duration>,
    /// Since when the body has been waiting for bytes: the last frame, or the first poll after the reader
    /// took a while to ask again (time the reader spends elsewhere is no stall). Tokio's clock, as the timer's.
    last: tokio::time::Instant,
    /// The last poll found no frame.
    waiting: bool,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    pacing: Pacing,
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
/// A body is paced only while it comes at most this fast per [`PACE`] (512 KiB a millisecond): about what one
/// read of the HTTP client takes (hyper reads up to ~400 KB at a time).
const PACE_GATHERS: u64 = 512 * 1024;

/// When a body pauses: after a frame under [`SMALL_FRAME`], past its first MiB ([`UNPACED`]), with at least a MiB
/// still to come (so never near its end, nor in a small object), while it comes at most [`PACE_GATHERS`] per
/// pause (measured since the last pause began, or since its first frame): a faster body is not paced, as a pause
/// would gather more than one read takes and stall the sender once the socket's buffer is full (moto's 1.3 GB/s
/// stream lost 8 % to pauses).
///
/// Only bodies read as they came off a plain TCP socket are paced ([`Pacing::applies`]). Over TLS (to the
/// server or to a proxy) and HTTP/2 a frame is at most 16 KiB (a TLS record, an HTTP/2 DATA frame), and its size
/// follows the sender's writes, whatever the socket holds: every frame would look small and each pause would
/// let one through, throttling the download to a frame per pause.
struct Pacing {
    /// Whether this body may pause at all.
    enabled: bool,
    /// Bytes received so far.
    received: u64,
    /// Since when the rate is measured, and the bytes received since.
    window: Option<(tokio::time::Instant, u64)>,
    /// The pause under way: until when, and its timer.
    until: Option<tokio::time::Instant>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Pacing {
    /// Pacing for a body that may pause (see [`Pacing::applies`]) or may not.
    fn new(enabled: bool) -> Self {
        Pacing { enabled, received: 0, window: None, until: None, sleep: None }
    }

    /// Whether a response's body is paced: it came, as `version`, from a `final_url` (after redirects) with the
    /// `http` scheme, over a connection without TLS (`tls`: reqwest's [`TlsInfo`](reqwest::tls::TlsInfo) is on
    /// the response, which a TLS connection to an HTTPS proxy has too).
    fn applies(final_url: &reqwest::Url, version: http::Version, tls: bool) -> bool {
        final_url.scheme() == "http" && version <= http::Version::HTTP_11 && !tls
    }

    /// Takes note of a data frame of `len` bytes, with `rest` bytes still to come; pauses after it when that is
    /// worth it.
    fn frame(&mut self, len: usize, rest: u64) {
        // A body that never pauses (every one over TLS) reads no clock per frame.
        if !self.enabled {
            return;
        }
        let now = tokio::time::Instant::now();
        self.received += len as u64;
        let small = len < SMALL_FRAME;
        let (since, bytes) = self.window.get_or_insert((now, 0));
        *bytes += len as u64;
        let slow = u128::from(*bytes) * PACE.as_nanos() <= u128::from(PACE_GATHERS) * (now - *since).as_nanos();
        if small && self.received >= UNPACED && rest >= UNPACED && slow {
            self.window = Some((now, 0));
            self.until = Some(now + PACE);
        }
    }

    /// Ready once the pause under way (if any) is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(until) = self.until else { return Poll::Ready(()) };
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != until {
                    sleep.as_mut().reset(until);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep_until(until))),
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.until = None;
        Poll::Ready(())
    }
}

impl ResponseBody {
    fn new(body: reqwest::Body, idle: Option<Duration>, what: String, pacing: Pacing) -> Self {
        ResponseBody {
            body,
            idle,
            last: tokio::time::Instant::now(),
            waiting: false,
            sleep: None,
            pacing,
            what,
            done: false,
        }
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
        if self.pacing.poll(cx).is_pending() {
            return Poll::Pending;
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.waiting = false;
                if let Some(data) = frame.data_ref() {
                    let rest = self.body.size_hint().lower();
                    self.pacing.frame(data.len(), rest);
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
        let mut body = ResponseBody::new(
            reqwest::Body::wrap_stream(receiver),
            Some(Duration::from_secs(10)),
            "GET /k".into(),
            Pacing::new(true),
        );
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

    const KIB: usize = 1024;

    /// A body of frames of these sizes, all ready at once, that may be paced.
    fn body_of(sizes: &[usize]) -> ResponseBody {
        with_pacing(sizes, Pacing::new(true))
    }

    fn with_pacing(sizes: &[usize], pacing: Pacing) -> ResponseBody {
        let frames = sizes.iter().map(|&n| Bytes::from(vec![7u8; n])).collect();
        ResponseBody::new(reqwest::Body::wrap(Ready { frames }), None, "GET /k".into(), pacing)
    }

    /// The length of the frame `body` has at once; `None`: it waits.
    fn next(body: &mut ResponseBody) -> Option<usize> {
        use futures::FutureExt;
        use http_body_util::BodyExt;
        body.frame().now_or_never().map(|f| f.unwrap().unwrap().into_data().unwrap().len())
    }

    /// Reads `body` to its end, waiting `PACE` whenever it waits: how many frames came before each pause.
    async fn pauses_of(body: &mut ResponseBody) -> Vec<usize> {
        use futures::FutureExt;
        use http_body_util::BodyExt;
        let mut pauses = Vec::new();
        let mut frames = 0;
        loop {
            match body.frame().now_or_never() {
                Some(Some(frame)) => {
                    frame.unwrap();
                    frames += 1;
                }
                Some(None) => return pauses,
                None => {
                    pauses.push(frames);
                    tokio::time::advance(PACE).await;
                }
            }
        }
    }

    /// After a small frame, past the first MiB and with at least a MiB to come, a body that comes slowly lets
    /// the socket gather bytes for `PACE`; after a large frame, in the first MiB and in the last, it reads on at
    /// once.
    #[tokio::test(start_paused = true)]
    async fn a_slow_large_body_waits_after_a_small_frame_and_nothing_else_does() {
        let sizes = [16 * KIB, 1024 * KIB, 16 * KIB, 256 * KIB, 16 * KIB, 128 * KIB, 2048 * KIB, 16 * KIB, 16 * KIB];
        let mut body = body_of(&sizes);
        // Small frames in the first MiB are not waited after.
        assert_eq!(next(&mut body), Some(16 * KIB));
        // The body comes at about 10 MB/s.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(next(&mut body), Some(1024 * KIB));
        assert_eq!(next(&mut body), Some(16 * KIB));
        // A small frame past the first MiB, with 2.3 MiB to come: the next one waits, though it is ready.
        assert_eq!(next(&mut body), None);
        tokio::time::advance(PACE - Duration::from_micros(1)).await;
        assert_eq!(next(&mut body), None);
        tokio::time::advance(Duration::from_micros(1)).await;
        // The small frame after the large one (272 KiB in the ms since the pause began: slow) is waited after.
        assert_eq!(next(&mut body), Some(256 * KIB));
        assert_eq!(next(&mut body), Some(16 * KIB));
        assert_eq!(next(&mut body), None);
        tokio::time::advance(PACE).await;
        assert_eq!(next(&mut body), Some(128 * KIB));
        // After a large frame: no wait; less than a MiB to come: never paced.
        assert_eq!(next(&mut body), Some(2048 * KIB));
        assert_eq!(next(&mut body), Some(16 * KIB));
        assert_eq!(next(&mut body), Some(16 * KIB));
        assert_eq!(pauses_of(&mut body).await, Vec::<usize>::new());
    }

    /// A body that comes faster than a pause would let the socket hold is never paced.
    #[tokio::test(start_paused = true)]
    async fn a_fast_body_is_never_paced() {
        let sizes = [16 * KIB, 1024 * KIB, 16 * KIB, 16 * KIB, 256 * KIB, 16 * KIB, 2048 * KIB, 16 * KIB];
        assert_eq!(pauses_of(&mut body_of(&sizes)).await, Vec::<usize>::new());
    }

    /// A body that was slow, then comes fast, stops pausing: the rate counts from the last pause.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_speeds_up_stops_pausing() {
        let mut sizes = vec![16 * KIB; 64];
        sizes.extend([400 * KIB, 400 * KIB, 400 * KIB]);
        sizes.extend([16 * KIB; 80]);
        let mut body = body_of(&sizes);
        assert_eq!(next(&mut body), Some(16 * KIB));
        tokio::time::advance(Duration::from_millis(100)).await;
        // One pause once the first MiB came (63 frames after the first); it gathers 1.2 MiB of large frames,
        // more than `PACE_GATHERS`: no more pauses, though small frames follow.
        assert_eq!(pauses_of(&mut body).await, [63]);
    }

    /// Only plain HTTP/1 bodies from a plain connection are paced; over TLS (to the server after a redirect, or
    /// to a proxy) and HTTP/2 frames are capped at 16 KiB whatever the socket holds.
    #[tokio::test(start_paused = true)]
    async fn only_plain_http1_bodies_are_paced() {
        let (http, https) = ("http://h:9000/b/k".parse().unwrap(), "https://s3.amazonaws.com/b/k".parse().unwrap());
        let (h1, h2) = (http::Version::HTTP_11, http::Version::HTTP_2);
        assert!(Pacing::applies(&http, h1, false));
        assert!(!Pacing::applies(&https, h1, false), "redirected to https");
        assert!(!Pacing::applies(&http, h1, true), "over TLS to a proxy");
        assert!(!Pacing::applies(&http, h2, false), "HTTP/2");
        // A body that may not pause reads slow small frames at once; one that may pauses after each from the
        // first MiB (the 64th frame) until a MiB is left (the 96th of 160).
        for (enabled, pauses) in [(false, vec![]), (true, (63..=95).collect::<Vec<_>>())] {
            let mut body = with_pacing(&[16 * KIB; 160], Pacing::new(enabled));
            assert_eq!(next(&mut body), Some(16 * KIB));
            tokio::time::advance(Duration::from_millis(100)).await;
            assert_eq!(pauses_of(&mut body).await, pauses, "enabled: {enabled}");
        }
    }

    /// A client for options that do not allow HTTP refuses a plain-HTTP URL before connecting (as
    /// object_store's own client does), so no redirect can take an https endpoint's request to plain HTTP.
    #[tokio::test]
    async fn plain_http_is_refused_unless_allowed() {
        // Nothing listens on port 1: an allowed request fails to connect, a refused one never tries.
        let send = |options: ClientOptions| async move {
            let client = Connector(Arc::new(transport())).connect(&options).unwrap();
            let error = client.execute(request(Method::GET, "http://127.0.0.1:1/bucket/k")).await.unwrap_err();
            (error.kind(), crate::bucket::error_chain(&error))
        };
        let (kind, refused) = send(ClientOptions::new()).await;
        assert!(refused.contains("URL scheme is not allowed"), "{kind:?}: {refused}");
        let (kind, allowed) = send(ClientOptions::new().with_allow_http(true)).await;
        assert_eq!(kind, HttpErrorKind::Connect, "{allowed}");
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
