//! Minimal HTTP/1.1 plumbing on hyper: a server loop that hands each request to a handler as an
//! Envoy-style header list, and a one-request client used for upstreams and filters' `http_call`s.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Envoy's default per-connection buffer limit; bodies above it are refused.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A message as the filters see it: lower-case names, pseudo-headers first, duplicates kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::routing::first_value(&self.headers, name)
    }

    /// `:status` as a number (0 when absent or malformed).
    pub fn status(&self) -> u16 {
        self.header(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// A request received by [`serve`], with the peer's address.
#[derive(Debug, Clone)]
pub struct ServerRequest {
    pub message: Message,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Why a client request failed, in the words Envoy uses for the same failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    Connect(String),
    Timeout,
    Reset(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(reason) => write!(f, "connection failure: {reason}"),
            Self::Timeout => write!(f, "upstream request timeout"),
            Self::Reset(reason) => write!(f, "reset before headers: {reason}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Accepts connections until `shutdown` turns true; each request goes to `handler`.
pub async fn serve<H, F>(listener: TcpListener, mut shutdown: watch::Receiver<bool>, handler: H)
where
    H: Fn(ServerRequest) -> F + Send + Sync + 'static,
    F: Future<Output = Message> + Send + 'static,
{
    let handler = Arc::new(handler);
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let handler = Arc::clone(&handler);
        let mut connection_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let handler = Arc::clone(&handler);
                async move {
                    let response = match read_request(request).await {
                        Ok(message) => {
                            handler(ServerRequest {
                                message,
                                peer,
                                local,
                            })
                            .await
                        }
                        Err(status) => {
                            plain_response(status, "request body too large or unreadable\n")
                        }
                    };
                    Ok::<_, Infallible>(to_hyper_response(response))
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = connection_shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _finished = connection.as_mut().await;
                }
            }
        });
    }
}

async fn read_request(request: hyper::Request<Incoming>) -> Result<Message, u16> {
    let (parts, body) = request.into_parts();
    let mut headers = vec![
        (":method".to_owned(), parts.method.as_str().to_owned()),
        (
            ":path".to_owned(),
            parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        ),
    ];
    let authority = parts
        .headers
        .get(hyper::header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default();
    headers.push((":authority".to_owned(), authority));
    headers.push((":scheme".to_owned(), "http".to_owned()));
    for (name, value) in &parts.headers {
        // Envoy turns HTTP/1 `Host` into `:authority`.
        if name == hyper::header::HOST {
            continue;
        }
        headers.push((
            name.as_str().to_owned(),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ));
    }
    let body = Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| 413_u16)?
        .to_bytes();
    Ok(Message { headers, body })
}

fn to_hyper_response(message: Message) -> hyper::Response<Full<Bytes>> {
    let Message { headers, body } = message;
    let status = headers
        .iter()
        .find(|(name, _)| name == ":status")
        .and_then(|(_, value)| value.parse::<u16>().ok())
        .unwrap_or(502);
    let mut builder = hyper::Response::builder().status(status.max(100));
    for (name, value) in &headers {
        if name.starts_with(':') || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Full::new(body)).unwrap_or_else(|_| {
        let mut fallback =
            hyper::Response::new(Full::new(Bytes::from_static(b"invalid response headers\n")));
        *fallback.status_mut() = hyper::StatusCode::BAD_GATEWAY;
        fallback
    })
}

/// A response message with `:status`, a text body and its content type.
pub fn plain_response(status: u16, body: &str) -> Message {
    Message {
        headers: vec![
            (":status".to_owned(), status.to_string()),
            ("content-type".to_owned(), "text/plain".to_owned()),
            ("content-length".to_owned(), body.len().to_string()),
        ],
        body: Bytes::copy_from_slice(body.as_bytes()),
    }
}

/// Sends one request (`:method`, `:path`, `:authority` pseudo-headers) to `address` over a fresh
/// HTTP/1.1 connection and returns the response as a message with `:status`.
pub async fn send(
    address: &str,
    request: &Message,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Message, ClientError> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| ClientError::Connect(format!("connect to {address} timed out")))?
        .map_err(|e| ClientError::Connect(format!("{address}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Reset(e.to_string()))?;
    tokio::spawn(async move {
        let _closed = connection.await;
    });

    let method = request.header(":method").unwrap_or("GET");
    let path = request.header(":path").unwrap_or("/");
    let mut builder = hyper::Request::builder().method(method).uri(path);
    if let Some(authority) = request.header(":authority") {
        builder = builder.header(hyper::header::HOST, authority);
    }
    for (name, value) in &request.headers {
        if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
            continue;
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    let hyper_request = builder
        .body(Full::new(request.body.clone()))
        .map_err(|e| ClientError::Reset(e.to_string()))?;

    let exchange = async {
        let response = sender
            .send_request(hyper_request)
            .await
            .map_err(|e| ClientError::Reset(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::Reset(e.to_string()))?
            .to_bytes();
        let mut headers = vec![(":status".to_owned(), parts.status.as_u16().to_string())];
        for (name, value) in &parts.headers {
            headers.push((
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
        Ok::<Message, ClientError>(Message { headers, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout)?
}
