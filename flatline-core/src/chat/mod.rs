//! The chat WebSocket's framing (M§1.2, M§1.3): Signal's `WebSocketMessage` protobufs, the checks that decide when a
//! frame is "badly formatted" (the socket is then closed with 1007), and the header rules of socket requests.
//!
//! Pure and transport-free: the server owns the socket, this module only turns bytes into validated frames and back.

use prost::Message as _;

/// `WebSocketRequestMessage` exactly as Signal's `WebSocketProtocol.proto` (proto2: presence matters, `id = 0` is a
/// real id).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WebSocketRequestMessage {
    /// HTTP method.
    #[prost(string, optional, tag = "1")]
    pub verb: Option<String>,
    /// Path with query.
    #[prost(string, optional, tag = "2")]
    pub path: Option<String>,
    /// Request body.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub body: Option<Vec<u8>>,
    /// `name:value` header lines.
    #[prost(string, repeated, tag = "5")]
    pub headers: Vec<String>,
    /// Request id; a request without one gets no response.
    #[prost(uint64, optional, tag = "4")]
    pub id: Option<u64>,
}

/// `WebSocketResponseMessage` exactly as Signal's `WebSocketProtocol.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WebSocketResponseMessage {
    /// The id of the request answered.
    #[prost(uint64, optional, tag = "1")]
    pub id: Option<u64>,
    /// HTTP status.
    #[prost(uint32, optional, tag = "2")]
    pub status: Option<u32>,
    /// Reason phrase.
    #[prost(string, optional, tag = "3")]
    pub message: Option<String>,
    /// `name:value` header lines.
    #[prost(string, repeated, tag = "5")]
    pub headers: Vec<String>,
    /// Response body; omitted when empty.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub body: Option<Vec<u8>>,
}

/// The frame kind of [`WebSocketMessage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    /// Not a valid frame.
    Unknown = 0,
    /// A request (either direction).
    Request = 1,
    /// A response to an earlier request.
    Response = 2,
}

/// `WebSocketMessage`: every binary WebSocket message carries exactly one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WebSocketMessage {
    /// Which of `request` / `response` is meant.
    #[prost(enumeration = "MessageType", optional, tag = "1")]
    pub r#type: Option<i32>,
    /// Set for requests.
    #[prost(message, optional, tag = "2")]
    pub request: Option<WebSocketRequestMessage>,
    /// Set for responses.
    #[prost(message, optional, tag = "3")]
    pub response: Option<WebSocketResponseMessage>,
}

/// `ProvisioningAddress` (Signal's `TextSecure.proto`, libsignal's `chat_provisioning.proto`): the body of the
/// `PUT /v1/address` the server sends first on a provisioning socket (M§5).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProvisioningAddress {
    /// The address a primary device sends the provisioning message to (`PUT /v1/provisioning/{address}`).
    #[prost(string, optional, tag = "1")]
    pub address: Option<String>,
}

/// The serialized `ProvisioningAddress` for `address`.
pub fn encode_provisioning_address(address: &str) -> Vec<u8> {
    ProvisioningAddress {
        address: Some(address.to_owned()),
    }
    .encode_to_vec()
}

/// A frame that Signal-Server would call "Badly formatted": the socket is closed with 1007.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a `WebSocketMessage` protobuf.
    #[error("frame is not a WebSocketMessage")]
    Undecodable,
    /// `type` missing, unknown, or not matching the message it carries.
    #[error("frame has no valid type")]
    BadType,
    /// A request without `verb` or `path`.
    #[error("request frame lacks verb or path")]
    IncompleteRequest,
    /// A response without `id`, `status` or `message`.
    #[error("response frame lacks id, status or message")]
    IncompleteResponse,
}

/// One header of a socket request: lower-case name, trimmed value.
pub type Header = (String, String);

/// A validated request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// HTTP method as sent.
    pub verb: String,
    /// Path with query.
    pub path: String,
    /// Body (empty when absent).
    pub body: Vec<u8>,
    /// Headers that parsed (see [`parse_header`]), in order.
    pub headers: Vec<Header>,
    /// Request id; `None` means "no response wanted".
    pub id: Option<u64>,
}

/// A validated response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The id of the request answered.
    pub id: u64,
    /// HTTP status.
    pub status: u32,
    /// Reason phrase.
    pub message: String,
    /// Headers that parsed, in order.
    pub headers: Vec<Header>,
    /// Body (empty when absent).
    pub body: Vec<u8>,
}

/// A validated frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// Decodes and validates one binary WebSocket message.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, FrameError> {
    let message = WebSocketMessage::decode(bytes).map_err(|_| FrameError::Undecodable)?;
    match message.r#type.and_then(|t| MessageType::try_from(t).ok()) {
        Some(MessageType::Request) => {
            let request = message.request.ok_or(FrameError::BadType)?;
            let (Some(verb), Some(path)) = (request.verb, request.path) else {
                return Err(FrameError::IncompleteRequest);
            };
            Ok(Frame::Request(Request {
                verb,
                path,
                body: request.body.unwrap_or_default(),
                headers: parse_headers(&request.headers),
                id: request.id,
            }))
        }
        Some(MessageType::Response) => {
            let response = message.response.ok_or(FrameError::BadType)?;
            let (Some(id), Some(status), Some(reason)) =
                (response.id, response.status, response.message)
            else {
                return Err(FrameError::IncompleteResponse);
            };
            Ok(Frame::Response(Response {
                id,
                status,
                message: reason,
                headers: parse_headers(&response.headers),
                body: response.body.unwrap_or_default(),
            }))
        }
        Some(MessageType::Unknown) | None => Err(FrameError::BadType),
    }
}

/// Encodes a response frame as Signal-Server does: headers as `Name:value` (no space), body omitted when empty. The
/// caller adds `Content-Length` to `headers` (Signal always sends it).
pub fn encode_response(
    id: u64,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    WebSocketMessage {
        r#type: Some(MessageType::Response as i32),
        request: None,
        response: Some(WebSocketResponseMessage {
            id: Some(id),
            status: Some(u32::from(status)),
            message: Some(reason.to_owned()),
            headers: headers.iter().map(|(n, v)| format!("{n}:{v}")).collect(),
            body: (!body.is_empty()).then(|| body.to_vec()),
        }),
    }
    .encode_to_vec()
}

/// Encodes a request frame (the server's pushes, or a test client's requests); body omitted when empty.
pub fn encode_request(
    id: Option<u64>,
    verb: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    WebSocketMessage {
        r#type: Some(MessageType::Request as i32),
        request: Some(WebSocketRequestMessage {
            verb: Some(verb.to_owned()),
            path: Some(path.to_owned()),
            body: (!body.is_empty()).then(|| body.to_vec()),
            headers: headers.iter().map(|(n, v)| format!("{n}:{v}")).collect(),
            id,
        }),
        response: None,
    }
    .encode_to_vec()
}

/// Parses one `name:value` header line: split on the *first* colon (Signal-Server drops values that contain a colon;
/// we keep them), both parts trimmed, the name lower-cased. `None` for a line without a colon or with an empty name.
pub fn parse_header(line: &str) -> Option<Header> {
    let (name, value) = line.split_once(':')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value.trim().to_owned()))
}

fn parse_headers(lines: &[String]) -> Vec<Header> {
    lines.iter().filter_map(|l| parse_header(l)).collect()
}

/// The headers a tunnelled request is handled with (M§1.3): the upgrade request's headers, minus `connection`,
/// `upgrade` and any `*websocket-*` header, overlaid by the request's own headers, except that a request-level
/// `x-forwarded-for` is ignored (the client IP is the socket's) and the upgrade's `user-agent` always wins.
/// All names are expected lower-case (as [`parse_header`] yields).
pub fn effective_headers(upgrade: &[Header], request: &[Header]) -> Vec<Header> {
    let kept_from_upgrade =
        |name: &str| name != "connection" && name != "upgrade" && !name.contains("websocket-");
    let upgrade_agent = upgrade.iter().any(|(n, _)| n == "user-agent");
    let overridden: Vec<&str> = request
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "x-forwarded-for" && !(upgrade_agent && *n == "user-agent"))
        .collect();
    let mut out: Vec<Header> = upgrade
        .iter()
        .filter(|(n, _)| kept_from_upgrade(n) && !overridden.contains(&n.as_str()))
        .cloned()
        .collect();
    out.extend(
        request
            .iter()
            .filter(|(n, _)| overridden.contains(&n.as_str()))
            .cloned(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> Header {
        (n.to_owned(), v.to_owned())
    }

    #[test]
    fn request_round_trip_keeps_id_zero_and_parses_headers() {
        let bytes = encode_request(
            Some(0),
            "GET",
            "/v1/accounts/whoami",
            &[("content-type", " application/json")],
            b"",
        );
        let Ok(Frame::Request(r)) = decode_frame(&bytes) else {
            panic!("not a request")
        };
        assert_eq!(r.id, Some(0), "id 0 is a real id in proto2");
        assert_eq!(
            (r.verb.as_str(), r.path.as_str()),
            ("GET", "/v1/accounts/whoami")
        );
        assert_eq!(r.headers, vec![h("content-type", "application/json")]);
        assert!(r.body.is_empty());
    }

    #[test]
    fn request_without_id_decodes_with_none() {
        let bytes = encode_request(None, "PUT", "/x", &[], b"body");
        let Ok(Frame::Request(r)) = decode_frame(&bytes) else {
            panic!("not a request")
        };
        assert_eq!((r.id, r.body.as_slice()), (None, b"body".as_slice()));
    }

    #[test]
    fn response_encoding_matches_signal_server() {
        let bytes = encode_response(7, 200, "OK", &[("Content-Length", "0")], b"");
        let decoded = WebSocketMessage::decode(bytes.as_slice()).ok();
        let response = decoded.and_then(|m| m.response);
        let Some(response) = response else {
            panic!("no response")
        };
        assert_eq!(response.headers, vec!["Content-Length:0".to_owned()]);
        assert_eq!(response.body, None, "empty body is omitted");
        assert_eq!(response.message.as_deref(), Some("OK"));
        assert_eq!(
            decode_frame(&bytes),
            Ok(Frame::Response(Response {
                id: 7,
                status: 200,
                message: "OK".into(),
                headers: vec![h("content-length", "0")],
                body: vec![],
            }))
        );
    }

    #[test]
    fn badly_formatted_frames_are_classified() {
        let req = |verb: Option<&str>, path: Option<&str>| WebSocketMessage {
            r#type: Some(1),
            request: Some(WebSocketRequestMessage {
                verb: verb.map(Into::into),
                path: path.map(Into::into),
                body: None,
                headers: vec![],
                id: Some(1),
            }),
            response: None,
        };
        let resp = |id: Option<u64>, status: Option<u32>, message: Option<&str>| WebSocketMessage {
            r#type: Some(2),
            request: None,
            response: Some(WebSocketResponseMessage {
                id,
                status,
                message: message.map(Into::into),
                headers: vec![],
                body: None,
            }),
        };
        let cases: Vec<(WebSocketMessage, FrameError)> = vec![
            (req(None, Some("/")), FrameError::IncompleteRequest),
            (req(Some("GET"), None), FrameError::IncompleteRequest),
            (
                resp(None, Some(200), Some("OK")),
                FrameError::IncompleteResponse,
            ),
            (
                resp(Some(1), None, Some("OK")),
                FrameError::IncompleteResponse,
            ),
            (
                resp(Some(1), Some(200), None),
                FrameError::IncompleteResponse,
            ),
            (
                WebSocketMessage {
                    r#type: None,
                    ..req(Some("GET"), Some("/"))
                },
                FrameError::BadType,
            ),
            (
                WebSocketMessage {
                    r#type: Some(0),
                    ..req(Some("GET"), Some("/"))
                },
                FrameError::BadType,
            ),
            (
                WebSocketMessage {
                    r#type: Some(9),
                    ..req(Some("GET"), Some("/"))
                },
                FrameError::BadType,
            ),
            // A request type carrying only a response.
            (
                WebSocketMessage {
                    r#type: Some(1),
                    ..resp(Some(1), Some(200), Some("OK"))
                },
                FrameError::BadType,
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(
                decode_frame(&message.encode_to_vec()),
                Err(expected.clone()),
                "{message:?}"
            );
        }
        assert_eq!(
            decode_frame(&[0xff, 0xff, 0xff]),
            Err(FrameError::Undecodable)
        );
    }

    #[test]
    fn provisioning_address_is_field_one() {
        let bytes = encode_provisioning_address("AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(
            &bytes[..2],
            &[0x0a, 24],
            "field 1, length-delimited, 24 bytes"
        );
        assert_eq!(
            ProvisioningAddress::decode(bytes.as_slice())
                .ok()
                .and_then(|a| a.address),
            Some("AAAAAAAAAAAAAAAAAAAAAA==".to_owned())
        );
    }

    #[test]
    fn header_lines_split_on_first_colon() {
        let cases = [
            (
                "content-type: application/json",
                Some(h("content-type", "application/json")),
            ),
            ("X-Test: a:b", Some(h("x-test", "a:b"))),
            (
                "Unidentified-Access-Key:q6ur",
                Some(h("unidentified-access-key", "q6ur")),
            ),
            ("name:", Some(h("name", ""))),
            ("no colon", None),
            (": value", None),
            ("", None),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_header(line), expected, "{line:?}");
        }
    }

    #[test]
    fn effective_headers_follow_signal_server() {
        let upgrade = vec![
            h("authorization", "Basic abc"),
            h("user-agent", "Signal-Desktop libsignal/0.103.0"),
            h("connection", "Upgrade"),
            h("upgrade", "websocket"),
            h("sec-websocket-key", "k"),
            h("x-signal-receive-stories", "true"),
            h("accept-language", "en"),
        ];
        let request = vec![
            h("accept-language", "de"),
            h("user-agent", "spoofed"),
            h("x-forwarded-for", "203.0.113.9"),
            h("content-type", "application/json"),
        ];
        let mut got = effective_headers(&upgrade, &request);
        got.sort();
        let mut want = vec![
            h("authorization", "Basic abc"),
            h("user-agent", "Signal-Desktop libsignal/0.103.0"),
            h("x-signal-receive-stories", "true"),
            h("accept-language", "de"),
            h("content-type", "application/json"),
        ];
        want.sort();
        assert_eq!(got, want);
        // Without an upgrade User-Agent, the request's own is used.
        assert_eq!(
            effective_headers(&[], &[h("user-agent", "app")]),
            vec![h("user-agent", "app")]
        );
    }
}
