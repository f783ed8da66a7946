//! Demo upstreams: an echo service that answers with the request it received, and a static JSON
//! file server for the JWKS.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::http::{Message, ServerRequest};

/// The echo answer: `{"upstream", "method", "path", "headers", "body"}`. Header names are
/// lower-case; repeated headers are joined with `, ` (their HTTP meaning).
pub fn echo(name: &str, request: &ServerRequest) -> Message {
    let message = &request.message;
    let mut headers = Map::new();
    for (header, value) in &message.headers {
        if header.starts_with(':') {
            continue;
        }
        let merged = match headers.get(header) {
            Some(Value::String(previous)) => format!("{previous}, {value}"),
            _ => value.clone(),
        };
        headers.insert(header.clone(), Value::String(merged));
    }
    if let Some(authority) = message.header(":authority") {
        headers.insert("host".to_owned(), Value::String(authority.to_owned()));
    }
    let body = json!({
        "upstream": name,
        "method": message.header(":method").unwrap_or_default(),
        "path": message.header(":path").unwrap_or_default(),
        "headers": headers,
        "body": String::from_utf8_lossy(&message.body),
    });
    json_response(200, body.to_string().into_bytes())
}

/// Serves the same JSON document for every GET.
pub fn static_json(document: &Bytes, request: &ServerRequest) -> Message {
    match request.message.header(":method") {
        Some("GET" | "HEAD") => json_response(200, document.to_vec()),
        _ => crate::http::plain_response(405, "method not allowed\n"),
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Message {
    Message {
        headers: vec![
            (":status".to_owned(), status.to_string()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ],
        body: Bytes::from(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], body: &str) -> ServerRequest {
        ServerRequest {
            message: Message {
                headers: headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
                body: Bytes::copy_from_slice(body.as_bytes()),
            },
            peer: "127.0.0.1:1".parse().unwrap(),
            local: "127.0.0.1:2".parse().unwrap(),
        }
    }

    #[test]
    fn echo_returns_the_request_as_json() {
        let response = echo(
            "v1",
            &request(
                &[
                    (":method", "POST"),
                    (":path", "/a?b=1"),
                    (":authority", "h"),
                    ("x-a", "1"),
                    ("x-a", "2"),
                ],
                "hi",
            ),
        );
        assert_eq!(response.status(), 200);
        let answer: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(answer["upstream"], "v1");
        assert_eq!(answer["method"], "POST");
        assert_eq!(answer["path"], "/a?b=1");
        assert_eq!(answer["headers"]["x-a"], "1, 2");
        assert_eq!(answer["headers"]["host"], "h");
        assert_eq!(answer["body"], "hi");
    }

    #[test]
    fn static_json_serves_gets_only() {
        let document = Bytes::from_static(b"{\"keys\":[]}");
        let ok = static_json(&document, &request(&[(":method", "GET")], ""));
        assert_eq!((ok.status(), ok.body), (200, document.clone()));
        assert_eq!(
            static_json(&document, &request(&[(":method", "POST")], "")).status(),
            405
        );
    }
}
