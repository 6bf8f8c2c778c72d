//! A minimal DynamoDB JSON 1.0 client: one kept-alive HTTP/1.1 connection per endpoint, signed
//! requests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::sigv4::{Signer, amz_date_now};

/// An endpoint `http://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub address: String,
    /// The `Host` header value.
    pub host: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/]`; `https` is not supported.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .trim()
            .strip_prefix("http://")
            .ok_or_else(|| format!("endpoint {url:?}: only http:// endpoints are supported"))?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!("endpoint {url:?}: expected http://host[:port]"));
        }
        let has_port = host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        let address = if has_port { host.to_string() } else { format!("{host}:80") };
        Ok(Endpoint { address, host: host.to_string() })
    }
}

/// The outcome of one request that reached the server.
pub enum Reply {
    /// HTTP 200 with its body.
    Ok(Bytes),
    /// Any other status: the DynamoDB error type (`__type` after `#`) or the status.
    Error(String),
}

/// One connection to one endpoint, re-opened after a failure.
pub struct Connection {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    pub fn new(endpoint: Endpoint) -> Connection {
        Connection { endpoint, sender: None }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(&self.endpoint.address)
            .await
            .map_err(|error| format!("connect to {}: {error}", self.endpoint.address))?;
        stream.set_nodelay(true).map_err(|error| error.to_string())?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("handshake with {}: {error}", self.endpoint.address))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one signed DynamoDB request (`target` like `GetItem`). `Err` is a transport failure.
    pub async fn call(&mut self, signer: &Signer, target: &str, body: String) -> Result<Reply, String> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            self.sender = Some(self.connect().await?);
        }
        let Some(sender) = self.sender.as_mut() else { unreachable!("connected just above") };
        let date = amz_date_now();
        let target = format!("DynamoDB_20120810.{target}");
        let content_type = "application/x-amz-json-1.0";
        let authorization = signer.authorization(
            "POST",
            "/",
            "",
            &[
                ("content-type", content_type),
                ("host", &self.endpoint.host),
                ("x-amz-date", &date),
                ("x-amz-target", &target),
            ],
            body.as_bytes(),
            &date,
        );
        let request = hyper::Request::post("/")
            .header("host", &self.endpoint.host)
            .header("content-type", content_type)
            .header("x-amz-date", &date)
            .header("x-amz-target", &target)
            .header("authorization", authorization)
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| error.to_string())?;
        let result = async {
            sender.ready().await.map_err(|error| error.to_string())?;
            let response = sender.send_request(request).await.map_err(|error| error.to_string())?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|error| error.to_string())?.to_bytes();
            Ok::<_, String>((status, body))
        }
        .await;
        match result {
            Ok((status, body)) if status.is_success() => Ok(Reply::Ok(body)),
            Ok((status, body)) => Ok(Reply::Error(error_type(status.as_u16(), &body))),
            Err(error) => {
                self.sender = None;
                Err(format!("{}: {error}", self.endpoint.address))
            }
        }
    }
}

/// `ResourceNotFoundException` from `{"__type":"com.amazonaws...#ResourceNotFoundException",...}`.
fn error_type(status: u16, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        kind: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body).ok().and_then(|e| e.kind) {
        Some(kind) => kind.rsplit('#').next().unwrap_or(&kind).to_string(),
        None => format!("HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(e.address, "127.0.0.1:8000");
        assert_eq!(e.host, "127.0.0.1:8000");
        let e = Endpoint::parse("http://localhost").unwrap();
        assert_eq!(e.address, "localhost:80");
        assert!(Endpoint::parse("https://x").is_err());
        assert!(Endpoint::parse("http://x/y").is_err());
    }

    #[test]
    fn error_types() {
        let body = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"x"}"#;
        assert_eq!(error_type(400, body), "ResourceNotFoundException");
        assert_eq!(error_type(500, b"oops"), "HTTP 500");
    }
}
