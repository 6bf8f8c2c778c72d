//! The HTTP server: connection handling, graceful shutdown, and per-request protocol work.
//!
//! Shutdown, step by step: when the `shutdown` future resolves, the listener is dropped (no new
//! connections), every open connection is told to finish its in-flight request and close (HTTP/1.1
//! keep-alive connections close after their current response), and [`serve`] returns once all
//! have closed or `shutdown_grace` has passed. The caller then flushes storage.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use onggi_model::ops::{DYNAMODB_OPERATIONS, RequestContext, ServiceDescription, TagOperation};
use onggi_model::{DynamoError, ErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::Backend;
use crate::auth::parse_authorization;

/// The only `X-Amz-Target` prefix this server answers.
const TARGET_PREFIX: &str = "DynamoDB_20120810.";

/// Limits and timing of the HTTP server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes (DynamoDB: 16 MB).
    pub request_body_bytes_max: usize,
    /// How long shutdown waits for in-flight requests before dropping connections.
    pub shutdown_grace: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// Most connections served at once; further ones wait to be accepted.
    pub connections_max: usize,
    /// How long a client may take to send a request body.
    pub body_read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            request_body_bytes_max: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            connections_max: 4096,
            body_read_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves the DynamoDB API on `listener` until `shutdown` resolves, then drains connections.
pub async fn serve<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only: SDKs speak it to http:// endpoints, and HTTP/2's many streams per connection
    // would get around the connection limit below.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    // A client that opens a connection and never finishes its headers must not hold it forever.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
    let connections = Arc::new(tokio::sync::Semaphore::new(config.connections_max));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors must not spin the loop.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Past the connection limit, new connections wait in the listen backlog instead of
        // exhausting memory and file descriptors.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        let config = config.clone();
        let service = service_fn(move |request| {
            let backend = backend.clone();
            let config = config.clone();
            async move {
                // A bug that panics fails its own request with an internal error, never the node.
                let response = CatchUnwind(Box::pin(handle(&*backend, &config, request))).await.unwrap_or_else(|_| {
                    tracing::error!("request handler panicked; answering InternalServerError");
                    error_response(
                        &DynamoError::internal("The server encountered an internal error."),
                        &next_request_id(),
                    )
                });
                Ok::<_, Infallible>(response)
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(config.shutdown_grace) => tracing::warn!("shutdown grace elapsed; dropping open connections"),
    }
    Ok(())
}

/// Runs a future, turning a panic inside it into an `Err` (like `std::panic::catch_unwind`).
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let future = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.poll(context))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Ok(output)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// A fresh request id: process-unique, 52 upper-case alphanumerics like DynamoDB's.
fn next_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64)
    });
    let sequence = COUNTER.fetch_add(1, Ordering::Relaxed);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = start ^ sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut id = String::with_capacity(52);
    for _ in 0..52 {
        // xorshift: cheap, and uniqueness comes from the counter mixed in above.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        id.push(ALPHABET[(state % ALPHABET.len() as u64) as usize] as char);
    }
    id
}

/// Where `onggi cluster status` reads a node's view of its cluster (onggi's own endpoint; not
/// authenticated yet, like the rest of the API until the security work).
pub const CLUSTER_STATUS_PATH: &str = "/onggi/cluster/status";
/// Where `onggi cluster join` and `decommission` start a layout change (onggi's own endpoint;
/// not authenticated yet either): a JSON body `{"join": [{"id", "address"}], "decommission":
/// [id]}`, answered with the change's epoch, or 400 and `{"error": ...}`.
pub const CLUSTER_LAYOUT_PATH: &str = "/onggi/cluster/layout";
/// The largest layout change request body.
const CLUSTER_LAYOUT_BODY_MAX: usize = 64 * 1024;

async fn handle<B: Backend>(backend: &B, config: &ServerConfig, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let request_id = next_request_id();
    if request.method() == Method::GET && request.uri().path() == "/" {
        // DynamoDB answers a plain GET with a health line; load balancers rely on it.
        return respond(StatusCode::OK, "text/plain", Bytes::from_static(b"healthy: onggi "), &request_id);
    }
    if request.method() == Method::GET && request.uri().path() == CLUSTER_STATUS_PATH {
        let status = backend.cluster_status().await;
        let body = serde_json::to_vec(&status).unwrap_or_default();
        return respond(StatusCode::OK, "application/json", Bytes::from(body), &request_id);
    }
    if request.method() == Method::POST && request.uri().path() == CLUSTER_LAYOUT_PATH {
        let collect = Limited::new(request.into_body(), CLUSTER_LAYOUT_BODY_MAX).collect();
        let answer = match tokio::time::timeout(config.body_read_timeout, collect).await {
            Ok(Ok(body)) => match serde_json::from_slice(&body.to_bytes()) {
                Ok(change) => backend.change_layout(change).await,
                Err(error) => Err(format!("malformed layout change: {error}")),
            },
            Ok(Err(error)) => Err(format!("could not read the layout change: {error}")),
            Err(_) => Err("timed out reading the layout change".to_string()),
        };
        let (status, body) = match answer {
            Ok(answer) => (StatusCode::OK, answer),
            Err(error) => (StatusCode::BAD_REQUEST, serde_json::json!({ "error": error })),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        return respond(status, "application/json", Bytes::from(body), &request_id);
    }
    let operation = request
        .headers()
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .and_then(|target| target.strip_prefix(TARGET_PREFIX))
        .unwrap_or("")
        .to_string();
    let result = process(backend, config, &operation, &request_id, request).await;
    match result {
        Ok(body) => respond(StatusCode::OK, "application/x-amz-json-1.0", body, &request_id),
        Err(error) => {
            if error.kind == ErrorKind::InternalServer {
                // The details (storage errors, paths) go to the log, not to the client.
                tracing::error!(request_id, operation, message = %error.message, "internal error");
                let generic =
                    DynamoError::internal("The server encountered an internal error trying to fulfill the request.");
                return error_response(&generic, &request_id);
            } else {
                tracing::debug!(request_id, operation, error = %error, "request refused");
            }
            error_response(&error, &request_id)
        }
    }
}

async fn process<B: Backend>(
    backend: &B,
    config: &ServerConfig,
    operation: &str,
    request_id: &str,
    request: Request<Incoming>,
) -> Result<Bytes, DynamoError> {
    let authorization = request.headers().get("authorization").and_then(|value| value.to_str().ok());
    let scope = parse_authorization(authorization)?;
    if request.method() != Method::POST {
        return Err(DynamoError::new(ErrorKind::UnknownOperation, "An unknown operation was requested."));
    }
    let declared_length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > config.request_body_bytes_max as u64) {
        return Err(too_large(config));
    }
    let collect = Limited::new(request.into_body(), config.request_body_bytes_max).collect();
    let body = tokio::time::timeout(config.body_read_timeout, collect)
        .await
        .map_err(|_| DynamoError::serialization("Timed out reading the request body"))?
        .map_err(|error| {
            if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_large(config)
            } else {
                DynamoError::serialization(format!("Could not read the request body: {error}"))
            }
        })?
        .to_bytes();
    let context =
        RequestContext { request_id: request_id.to_string(), access_key_id: scope.access_key_id, region: scope.region };
    dispatch(backend, operation, &context, &body).await
}

fn too_large(config: &ServerConfig) -> DynamoError {
    DynamoError::new(
        ErrorKind::RequestEntityTooLarge,
        format!("Request size exceeds the limit of {} bytes", config.request_body_bytes_max),
    )
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, DynamoError> {
    serde_json::from_slice(body).map_err(|error| {
        // The JSON parser stops at 128 levels. Only attribute values nest in DynamoDB requests
        // (two JSON levels per value level), so this is always a value nested past DynamoDB's 32.
        if error.to_string().starts_with("recursion limit exceeded") {
            return DynamoError::validation(onggi_model::value::NESTING_MESSAGE);
        }
        // Data errors (a member of the wrong JSON type) and syntax errors are both
        // SerializationException in DynamoDB.
        DynamoError::serialization(match error.classify() {
            serde_json::error::Category::Data => format!("Unexpected value type in payload: {error}"),
            _ => format!("Malformed request body: {error}"),
        })
    })
}

fn render<T: Serialize>(output: &T) -> Result<Bytes, DynamoError> {
    serde_json::to_vec(output)
        .map(Bytes::from)
        .map_err(|error| DynamoError::internal(format!("could not render the response: {error}")))
}

async fn dispatch<B: Backend>(
    backend: &B,
    operation: &str,
    context: &RequestContext,
    body: &[u8],
) -> Result<Bytes, DynamoError> {
    match operation {
        "CreateTable" => render(&backend.create_table(context, parse(body)?).await?),
        "DescribeTable" => render(&backend.describe_table(context, parse(body)?).await?),
        "ListTables" => render(&backend.list_tables(context, parse(body)?).await?),
        "UpdateTable" => render(&backend.update_table(context, parse(body)?).await?),
        "DeleteTable" => render(&backend.delete_table(context, parse(body)?).await?),
        "PutItem" => render(&backend.put_item(context, parse(body)?).await?),
        "GetItem" => render(&backend.get_item(context, parse(body)?).await?),
        "UpdateItem" => render(&backend.update_item(context, parse(body)?).await?),
        "DeleteItem" => render(&backend.delete_item(context, parse(body)?).await?),
        "Query" => render(&backend.query(context, parse(body)?).await?),
        "Scan" => render(&backend.scan(context, parse(body)?).await?),
        "BatchGetItem" => render(&backend.batch_get_item(context, parse(body)?).await?),
        "BatchWriteItem" => render(&backend.batch_write_item(context, parse(body)?).await?),
        "UpdateTimeToLive" => render(&backend.update_time_to_live(context, parse(body)?).await?),
        "DescribeTimeToLive" => render(&backend.describe_time_to_live(context, parse(body)?).await?),
        "TagResource" => render(&backend.tags(context, TagOperation::Tag, parse(body)?).await?),
        "UntagResource" => render(&backend.tags(context, TagOperation::Untag, parse(body)?).await?),
        "ListTagsOfResource" => render(&backend.tags(context, TagOperation::List, parse(body)?).await?),
        "DescribeEndpoints" => render(&backend.describe_service(context, ServiceDescription::Endpoints).await?),
        "DescribeLimits" => render(&backend.describe_service(context, ServiceDescription::Limits).await?),
        known if DYNAMODB_OPERATIONS.contains(&known) => Err(DynamoError::new(
            ErrorKind::UnknownOperation,
            format!("onggi does not support the {known} operation yet."),
        )),
        _ => Err(DynamoError::new(ErrorKind::UnknownOperation, "An unknown operation was requested.")),
    }
}

fn error_response(error: &DynamoError, request_id: &str) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        #[serde(rename = "__type")]
        type_name: &'a str,
        message: &'a str,
        #[serde(rename = "Item", skip_serializing_if = "Option::is_none")]
        item: Option<&'a onggi_model::Item>,
    }
    let body = serde_json::to_vec(&ErrorBody {
        type_name: error.kind.type_name(),
        message: &error.message,
        item: error.item.as_ref(),
    })
    .expect("error bodies always serialize");
    let status = StatusCode::from_u16(error.kind.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    respond(status, "application/x-amz-json-1.0", Bytes::from(body), request_id)
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes, request_id: &str) -> Response<Full<Bytes>> {
    let crc = crc32fast::hash(&body);
    let length = body.len();
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert("x-amz-crc32", HeaderValue::from(crc));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_shaped_like_dynamodbs() {
        let first = next_request_id();
        let second = next_request_id();
        assert_ne!(first, second);
        assert_eq!(first.len(), 52);
        assert!(first.bytes().all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit()));
    }
}
