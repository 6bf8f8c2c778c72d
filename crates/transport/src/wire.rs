//! The wire format: the handshake greeting and the frame header, byte by byte.
//!
//! Everything here is pure (no I/O) so that it can be unit-tested, fuzzed, and reused by tools
//! that speak the protocol (a test that sends hand-made frames, a fault-injecting proxy). The
//! crate documentation describes the same layout in prose; the two must agree.
//!
//! All integers are big-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first eight bytes every connection carries in each direction.
pub const MAGIC: [u8; 8] = *b"ONGGINET";

/// The transport protocol this build speaks. A peer announcing any other version is refused:
/// the body of the greeting and the frame format may change from one version to the next, and
/// nodes never guess.
pub const PROTOCOL_VERSION: u16 = 1;

/// Length of the version-independent greeting prefix: magic (8), version (2), body length (2).
/// This prefix never changes, so that every version can read another's version and refuse it
/// with a clear message.
pub const HELLO_PREFIX_LEN: usize = 12;

/// Largest greeting body accepted, in bytes. A version-1 body is at most 287 bytes.
pub const HELLO_BODY_MAX_BYTES: usize = 512;

/// Largest cluster name, in bytes of UTF-8.
pub const CLUSTER_NAME_MAX_BYTES: usize = 255;

/// Length of a frame header: payload length (4), kind (1), flags (1), tag (2), request id (8).
pub const FRAME_HEADER_LEN: usize = 16;

/// What a frame is. The numbering is part of the protocol: append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A request that expects exactly one answer with the same request id.
    Request = 1,
    /// The handler's successful answer; the payload is the answer.
    Response = 2,
    /// The handler's error; the payload is a UTF-8 message.
    ErrorResponse = 3,
    /// The receiver refused the request unprocessed because too many requests (or bytes) from
    /// this connection are already in flight there. Empty payload. Safe to retry elsewhere.
    Overloaded = 4,
    /// A message that expects no answer (request id 0).
    OneWay = 5,
    /// A liveness probe from the connecting side; answered by a `Pong` with the same id.
    Ping = 6,
    /// The answer to a `Ping`.
    Pong = 7,
}

impl FrameKind {
    /// The kind with this byte value, if there is one.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::ErrorResponse,
            4 => FrameKind::Overloaded,
            5 => FrameKind::OneWay,
            6 => FrameKind::Ping,
            7 => FrameKind::Pong,
            _ => return None,
        })
    }
}

/// A decoded frame header. The payload (`payload_len` bytes) follows it on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the payload that follows the header, in bytes.
    pub payload_len: u32,
    /// What the frame is.
    pub kind: FrameKind,
    /// The node's message type, used to dispatch; the transport does not interpret it.
    /// Responses echo the request's tag.
    pub tag: u16,
    /// Matches a response to its request; unique among the requests in flight on one
    /// connection. Zero for one-way messages.
    pub request_id: u64,
}

impl FrameHeader {
    /// The header's 16 bytes.
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[0..4].copy_from_slice(&self.payload_len.to_be_bytes());
        out[4] = self.kind as u8;
        out[5] = 0; // flags: none defined in version 1
        out[6..8].copy_from_slice(&self.tag.to_be_bytes());
        out[8..16].copy_from_slice(&self.request_id.to_be_bytes());
        out
    }

    /// Decodes and checks a header: a known kind, no flags, and a payload no longer than
    /// `payload_max_bytes`. The length is checked here, before anyone allocates for it.
    pub fn decode(bytes: &[u8; FRAME_HEADER_LEN], payload_max_bytes: usize) -> Result<FrameHeader, WireError> {
        let payload_len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let kind = FrameKind::from_byte(bytes[4]).ok_or(WireError::UnknownFrameKind(bytes[4]))?;
        if bytes[5] != 0 {
            return Err(WireError::UnknownFlags(bytes[5]));
        }
        if payload_len as usize > payload_max_bytes {
            return Err(WireError::FrameTooLarge { len: payload_len as usize, max: payload_max_bytes });
        }
        let tag = u16::from_be_bytes([bytes[6], bytes[7]]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[8..16]);
        Ok(FrameHeader { payload_len, kind, tag, request_id: u64::from_be_bytes(id) })
    }
}

/// The greeting each side sends first on every connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's node id.
    pub node_id: u64,
    /// The sender's cluster name; both sides must have the same.
    pub cluster: String,
    /// The address the sender listens on (its identity as a peer, which its own outgoing
    /// connections do not show: they come from ephemeral ports).
    pub listen: SocketAddr,
    /// The largest frame payload the sender accepts; the other side never sends more.
    pub frame_bytes_max: u32,
}

impl Hello {
    /// The whole greeting: the version-independent prefix with [`PROTOCOL_VERSION`], then the
    /// version-1 body.
    ///
    /// # Panics
    ///
    /// If the cluster name is longer than [`CLUSTER_NAME_MAX_BYTES`] (the configuration is
    /// validated before a greeting is built, so this is a programming error).
    pub fn encode(&self) -> Vec<u8> {
        let cluster = self.cluster.as_bytes();
        assert!(cluster.len() <= CLUSTER_NAME_MAX_BYTES, "cluster name checked by Config::validate");
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&self.node_id.to_be_bytes());
        body.extend_from_slice(&self.frame_bytes_max.to_be_bytes());
        match self.listen.ip() {
            IpAddr::V4(ip) => {
                body.push(4);
                body.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                body.push(6);
                body.extend_from_slice(&ip.octets());
            }
        }
        body.extend_from_slice(&self.listen.port().to_be_bytes());
        body.push(cluster.len() as u8);
        body.extend_from_slice(cluster);
        debug_assert!(body.len() <= HELLO_BODY_MAX_BYTES);

        let mut out = Vec::with_capacity(HELLO_PREFIX_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes the version-independent prefix: checks the magic and returns the announced
    /// protocol version and body length. The caller compares the version with
    /// [`PROTOCOL_VERSION`] before reading the body, whose layout depends on it.
    pub fn decode_prefix(bytes: &[u8; HELLO_PREFIX_LEN]) -> Result<(u16, usize), WireError> {
        if bytes[0..8] != MAGIC {
            return Err(WireError::BadMagic);
        }
        let version = u16::from_be_bytes([bytes[8], bytes[9]]);
        let body_len = u16::from_be_bytes([bytes[10], bytes[11]]) as usize;
        Ok((version, body_len))
    }

    /// Decodes a version-1 body. Every byte must be used.
    pub fn decode_body(body: &[u8]) -> Result<Hello, WireError> {
        if body.len() > HELLO_BODY_MAX_BYTES {
            return Err(WireError::HelloTooLarge(body.len()));
        }
        let mut reader = Reader { rest: body };
        let node_id = u64::from_be_bytes(reader.array("node id")?);
        let frame_bytes_max = u32::from_be_bytes(reader.array("frame limit")?);
        let ip = match reader.array::<1>("address family")?[0] {
            4 => IpAddr::V4(Ipv4Addr::from(reader.array::<4>("IPv4 address")?)),
            6 => IpAddr::V6(Ipv6Addr::from(reader.array::<16>("IPv6 address")?)),
            _ => return Err(WireError::MalformedHello("unknown address family")),
        };
        let port = u16::from_be_bytes(reader.array("port")?);
        let cluster_len = reader.array::<1>("cluster name length")?[0] as usize;
        let cluster = reader.take(cluster_len, "cluster name")?;
        let cluster =
            std::str::from_utf8(cluster).map_err(|_| WireError::MalformedHello("cluster name is not UTF-8"))?;
        if !reader.rest.is_empty() {
            return Err(WireError::MalformedHello("trailing bytes"));
        }
        Ok(Hello { node_id, cluster: cluster.to_owned(), listen: SocketAddr::new(ip, port), frame_bytes_max })
    }
}

/// A cursor over a byte slice that never reads past its end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.rest.len() < len {
            return Err(WireError::MalformedHello(what));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
}

/// Bytes that do not follow the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The connection does not start with [`MAGIC`]: not an onggi node.
    #[error("not an onggi transport peer (bad magic bytes)")]
    BadMagic,
    /// The greeting body is longer than [`HELLO_BODY_MAX_BYTES`].
    #[error("handshake greeting of {0} bytes exceeds the limit of {HELLO_BODY_MAX_BYTES}")]
    HelloTooLarge(usize),
    /// The greeting body is cut short or holds an invalid field.
    #[error("malformed handshake greeting: {0}")]
    MalformedHello(&'static str),
    /// A frame header names a kind this version does not know.
    #[error("unknown frame kind {0}")]
    UnknownFrameKind(u8),
    /// A frame header sets flags; version 1 defines none.
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// A frame header announces a payload over the receiver's limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced payload length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(listen: &str, cluster: &str) -> Hello {
        Hello { node_id: 42, cluster: cluster.into(), listen: listen.parse().unwrap(), frame_bytes_max: 1 << 24 }
    }

    #[test]
    fn hello_round_trips_for_both_address_families() {
        for h in [hello("127.0.0.1:7000", "prod"), hello("[::1]:65535", ""), hello("10.1.2.3:1", &"x".repeat(255))] {
            let bytes = h.encode();
            let prefix: [u8; HELLO_PREFIX_LEN] = bytes[..HELLO_PREFIX_LEN].try_into().unwrap();
            let (version, body_len) = Hello::decode_prefix(&prefix).unwrap();
            assert_eq!(version, PROTOCOL_VERSION);
            assert_eq!(body_len, bytes.len() - HELLO_PREFIX_LEN);
            assert!(body_len <= HELLO_BODY_MAX_BYTES);
            assert_eq!(Hello::decode_body(&bytes[HELLO_PREFIX_LEN..]).unwrap(), h);
        }
    }

    #[test]
    fn hello_layout_is_fixed() {
        let bytes = hello("127.0.0.1:258", "ab").encode();
        let expected: Vec<u8> = [
            &b"ONGGINET"[..],
            &[0, 1],                    // version 1
            &[0, 22],                   // body length
            &[0, 0, 0, 0, 0, 0, 0, 42], // node id
            &[1, 0, 0, 0],              // frame limit 16 MiB
            &[4, 127, 0, 0, 1],         // IPv4 127.0.0.1
            &[1, 2],                    // port 258
            &[2, b'a', b'b'],           // cluster "ab"
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn every_truncation_and_corruption_of_a_hello_is_an_error_not_a_panic() {
        let bytes = hello("[::1]:7000", "cluster").encode();
        let body = &bytes[HELLO_PREFIX_LEN..];
        for len in 0..body.len() {
            assert!(Hello::decode_body(&body[..len]).is_err(), "truncated at {len}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert_eq!(Hello::decode_body(&longer), Err(WireError::MalformedHello("trailing bytes")));
        let mut family = body.to_vec();
        family[12] = 5;
        assert_eq!(Hello::decode_body(&family), Err(WireError::MalformedHello("unknown address family")));
        let mut not_utf8 = hello("127.0.0.1:1", "a").encode()[HELLO_PREFIX_LEN..].to_vec();
        let last = not_utf8.len() - 1;
        not_utf8[last] = 0xff;
        assert_eq!(Hello::decode_body(&not_utf8), Err(WireError::MalformedHello("cluster name is not UTF-8")));
        let mut magic = [0u8; HELLO_PREFIX_LEN];
        magic.copy_from_slice(&bytes[..HELLO_PREFIX_LEN]);
        magic[0] = b'X';
        assert_eq!(Hello::decode_prefix(&magic), Err(WireError::BadMagic));
    }

    #[test]
    fn frame_header_round_trips_and_has_a_fixed_layout() {
        let header = FrameHeader { payload_len: 0x0102_0304, kind: FrameKind::Request, tag: 0xabcd, request_id: 7 };
        let bytes = header.encode();
        assert_eq!(bytes, [1, 2, 3, 4, 1, 0, 0xab, 0xcd, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(FrameHeader::decode(&bytes, usize::MAX), Ok(header));
        for kind in 1..=7u8 {
            let kind = FrameKind::from_byte(kind).unwrap();
            let h = FrameHeader { payload_len: 0, kind, tag: 0, request_id: u64::MAX };
            assert_eq!(FrameHeader::decode(&h.encode(), 0), Ok(h));
        }
    }

    #[test]
    fn frame_header_checks_kind_flags_and_length_before_anything_else() {
        let good = FrameHeader { payload_len: 100, kind: FrameKind::OneWay, tag: 1, request_id: 0 }.encode();
        assert_eq!(FrameHeader::decode(&good, 99), Err(WireError::FrameTooLarge { len: 100, max: 99 }));
        assert!(FrameHeader::decode(&good, 100).is_ok());
        for bad_kind in [0u8, 8, 255] {
            let mut bytes = good;
            bytes[4] = bad_kind;
            assert_eq!(FrameHeader::decode(&bytes, 100), Err(WireError::UnknownFrameKind(bad_kind)));
        }
        let mut flags = good;
        flags[5] = 1;
        assert_eq!(FrameHeader::decode(&flags, 100), Err(WireError::UnknownFlags(1)));
        let huge = FrameHeader { payload_len: u32::MAX, kind: FrameKind::Request, tag: 0, request_id: 1 }.encode();
        assert!(matches!(FrameHeader::decode(&huge, 16 << 20), Err(WireError::FrameTooLarge { .. })));
    }
}
