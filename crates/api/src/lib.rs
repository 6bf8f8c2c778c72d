//! The DynamoDB wire protocol: JSON 1.0 over HTTP, in front of any [`Backend`].
//!
//! Every request is `POST /` with `X-Amz-Target: DynamoDB_20120810.<Operation>` and a JSON body.
//! This crate reads the body (refusing oversized ones before reading them whole), checks the
//! credential scope in the `Authorization` header, parses the operation's input, calls the backend
//! and renders its output or error exactly as DynamoDB does: `x-amzn-RequestId` on every response,
//! `x-amz-crc32` (CRC32 of the body bytes sent) on every response, and errors as
//! `{"__type": "...#Kind", "message": "..."}` with DynamoDB's HTTP status.
//!
//! **API boundary:** this crate depends on `onggi-model` only. It never sees storage, the
//! catalog or the cluster; the backend is whatever implements [`Backend`].

mod auth;
mod server;

pub use auth::{CredentialScope, parse_authorization};
pub use server::{CLUSTER_LAYOUT_PATH, CLUSTER_STATUS_PATH, ServerConfig, serve};

pub use onggi_model::ops::Backend;
