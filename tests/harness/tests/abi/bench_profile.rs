//! The bench profile `pw-bench` sends by default (`tests/fixtures/bench/request.json`) is the
//! request its README describes.

use std::path::PathBuf;

use meshward_host::cli::RequestFile;

fn profile() -> RequestFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bench/request.json");
    RequestFile::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_bench_request_has_twenty_headers_and_no_ids_or_credentials() {
    let file = profile();
    let headers = &file.request.headers;
    assert_eq!(headers.len(), 20);
    for pseudo in [":authority", ":path", ":method", ":scheme"] {
        assert!(headers.contains(pseudo), "{pseudo}");
    }
    assert_eq!(headers.get(":method"), Some("GET"));
    assert!(file.request.body.is_empty());
    let cookie = headers.get("cookie").unwrap();
    assert!((550..=650).contains(&cookie.len()), "{}", cookie.len());
    assert_eq!(
        headers.get("x-forwarded-for").unwrap().split(", ").count(),
        2
    );
    for absent in [
        "x-request-id",
        "traceparent",
        "tracestate",
        "b3",
        "authorization",
    ] {
        assert!(!headers.contains(absent), "{absent} is for profiles to add");
    }
}

#[test]
fn the_bench_response_has_eight_headers_and_a_matching_content_length() {
    let response = profile().response;
    assert_eq!(response.headers.len(), 8);
    assert_eq!(response.headers.get(":status"), Some("200"));
    assert_eq!(
        response.headers.get("content-length"),
        Some(response.body.len().to_string().as_str())
    );
}
