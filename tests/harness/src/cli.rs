//! Shared pieces of the `pw-run` and `pw-bench` command-line tools: the request file format
//! and the JSON rendering of an [`HttpOutcome`].
//!
//! Request file (every field optional):
//!
//! ```json
//! {
//!   "worker": 0,
//!   "headers": [[":method", "GET"], [":path", "/"], [":authority", "example.com"], [":scheme", "http"]],
//!   "body": "",
//!   "trailers": [],
//!   "properties": {"source_address": "10.0.0.1:5000", "destination_address": "10.0.0.2:8080",
//!                  "route_name": "r", "cluster_name": "c", "protocol": "HTTP/1.1"},
//!   "response": {"headers": [[":status", "200"]], "body": "", "trailers": []},
//!   "clusters": ["jwks"],
//!   "http_calls": [{"status": 200, "headers": [["content-type", "application/json"]], "body": "{}"}, "fail"]
//! }
//! ```
//!
//! `http_calls` answers the filter's `http_call`s in order (`"fail"` = reset); calls beyond the
//! list stay pending.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::chain::{CallReply, HttpOutcome, Request, Response};
use crate::engine::{HostEngine, Module};
use crate::shared::SharedState;
use crate::types::{HeaderMap, HttpCallResponse, LocalReply, StreamInfo};

/// What `pw-run` and `pw-bench` both start from.
pub struct Inputs {
    /// The compiled module.
    pub module: Module,
    /// Its name: the module file's stem (`dist/trace-id.wasm` → `trace-id`).
    pub name: String,
    /// The plugin configuration text (empty without a config file).
    pub config: String,
    /// The request file (or the tool's default request).
    pub file: RequestFile,
    /// Shared state with the request file's clusters registered.
    pub shared: SharedState,
}

/// Reads the optional config and request files, compiles `module_path`, and prepares the
/// shared state. `default_request` stands in for a missing request file.
///
/// # Errors
///
/// A file cannot be read, the request file is invalid, or the module does not load.
pub fn load_inputs(
    module_path: &str,
    config: Option<&str>,
    request: Option<&str>,
    default_request: &str,
) -> Result<Inputs, String> {
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"));
    let config = config.map(read).transpose()?.unwrap_or_default();
    let request_text = request
        .map(read)
        .transpose()?
        .unwrap_or_else(|| default_request.to_owned());
    let file = RequestFile::parse(&request_text)?;
    let engine = HostEngine::global().map_err(|e| e.to_string())?;
    let module = engine.load_file(module_path).map_err(|e| e.to_string())?;
    let shared = SharedState::new();
    if let Some(clusters) = &file.clusters {
        shared.set_clusters(clusters.iter().cloned());
    }
    let name = std::path::Path::new(module_path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Inputs {
        module,
        name,
        config,
        file,
        shared,
    })
}

/// A parsed request file.
#[derive(Clone, Debug, Default)]
pub struct RequestFile {
    /// Worker to run on.
    pub worker: usize,
    /// The request.
    pub request: Request,
    /// The upstream response.
    pub response: Response,
    /// Known clusters (`None`: any).
    pub clusters: Option<Vec<String>>,
    /// Answers for `http_call`s, in order.
    pub http_calls: Vec<CallReply>,
}

fn headers(value: Option<&Value>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    let Some(value) = value else { return Ok(map) };
    let list = value
        .as_array()
        .ok_or("headers must be a list of [name, value] pairs")?;
    for pair in list {
        match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) => map.append(k, v),
            _ => return Err(format!("bad header pair {pair}")),
        }
    }
    Ok(map)
}

fn text(value: Option<&Value>) -> Vec<u8> {
    value
        .and_then(Value::as_str)
        .map(|s| s.as_bytes().to_vec())
        .unwrap_or_default()
}

impl RequestFile {
    /// Parses the JSON request file; an empty document gives `GET /` to `example.com`.
    ///
    /// # Errors
    /// Invalid JSON or field shapes.
    pub fn parse(json_text: &str) -> Result<Self, String> {
        let v: Value = if json_text.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(json_text).map_err(|e| e.to_string())?
        };
        let mut request = Request::get("/", "example.com");
        if v.get("headers").is_some() {
            request.headers = headers(v.get("headers"))?;
        }
        request.body = text(v.get("body"));
        request.trailers = headers(v.get("trailers"))?;
        let mut info = StreamInfo::default();
        if let Some(p) = v.get("properties") {
            let s = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
            if let Some(x) = s("source_address") {
                info.source_address = x;
            }
            if let Some(x) = s("destination_address") {
                info.destination_address = x;
            }
            if let Some(x) = s("route_name") {
                info.route_name = x;
            }
            if let Some(x) = s("cluster_name") {
                info.cluster_name = x;
            }
            if let Some(x) = s("protocol") {
                info.protocol = x;
            }
        }
        request.info = info;
        let mut response = Response::new(200);
        if let Some(r) = v.get("response") {
            if r.get("headers").is_some() {
                response.headers = headers(r.get("headers"))?;
            }
            response.body = text(r.get("body"));
            response.trailers = headers(r.get("trailers"))?;
        }
        let clusters = v.get("clusters").and_then(Value::as_array).map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        });
        let mut http_calls = Vec::new();
        for answer in v
            .get("http_calls")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if answer.as_str() == Some("fail") {
                http_calls.push(CallReply::Fail);
                continue;
            }
            let status = answer.get("status").and_then(Value::as_u64).unwrap_or(200);
            let mut reply = HttpCallResponse::new(
                u16::try_from(status).unwrap_or(200),
                text(answer.get("body")),
            );
            for (k, val) in headers(answer.get("headers"))?.iter() {
                reply.headers.append(k, val);
            }
            http_calls.push(CallReply::Respond(reply));
        }
        let worker = v
            .get("worker")
            .and_then(Value::as_u64)
            .and_then(|w| usize::try_from(w).ok())
            .unwrap_or(0);
        Ok(Self {
            worker,
            request,
            response,
            clusters,
            http_calls,
        })
    }
}

/// Header map as a JSON list of `[name, value]` pairs.
pub fn headers_json(map: &HeaderMap) -> Value {
    Value::Array(
        map.to_string_pairs()
            .into_iter()
            .map(|(k, v)| json!([k, v]))
            .collect(),
    )
}

fn reply_json(reply: &LocalReply) -> Value {
    json!({
        "status": reply.status,
        "headers": headers_json(&reply.headers),
        "body": String::from_utf8_lossy(&reply.body),
        "details": reply.details,
        "grpc_status": reply.grpc_status,
    })
}

/// The outcome as JSON (for humans and scripts).
pub fn outcome_json(out: &HttpOutcome) -> Value {
    let metrics: BTreeMap<&String, Value> = out
        .metrics
        .iter()
        .map(|(k, m)| {
            (
                k,
                if m.samples.is_empty() {
                    json!(m.value)
                } else {
                    json!({ "samples": m.samples })
                },
            )
        })
        .collect();
    let shared: BTreeMap<&String, BTreeMap<&String, Value>> = out
        .shared_data
        .iter()
        .map(|(vm, data)| {
            (
                vm,
                data.iter()
                    .map(|(k, (v, cas))| {
                        (k, json!({"value": String::from_utf8_lossy(v), "cas": cas}))
                    })
                    .collect(),
            )
        })
        .collect();
    let calls = |list: &[crate::types::PendingHttpCall]| -> Value {
        Value::Array(
            list.iter()
                .map(|c| {
                    json!({
                        "worker": c.id.worker, "token": c.id.token, "cluster": c.cluster,
                        "headers": headers_json(&c.headers), "body": String::from_utf8_lossy(&c.body),
                        "timeout_ms": c.timeout_ms,
                    })
                })
                .collect(),
        )
    };
    json!({
        "request_action": format!("{:?}", out.request_action).split('(').next().unwrap_or_default(),
        "request_headers_after": out.request_headers_after.as_ref().map(headers_json),
        "request_body_after": out.request_body_after.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
        "upstream_called": out.upstream_called,
        "local_reply": out.local_reply.as_ref().map(|(i, r)| json!({"plugin": i, "reply": reply_json(r)})),
        "response": {
            "status": out.response.status(),
            "headers": headers_json(&out.response.headers),
            "body": String::from_utf8_lossy(&out.response.body),
            "trailers": headers_json(&out.response.trailers),
        },
        "reset": out.reset,
        "stalled": out.stalled,
        "route_cache_cleared": out.route_cache_cleared,
        "logs": out.logs.iter().map(|l| json!({"level": l.level.name(), "worker": l.worker, "message": l.message})).collect::<Vec<_>>(),
        "metrics": metrics,
        "shared_data": shared,
        "calls_made": calls(&out.calls_made),
        "pending_calls": calls(&out.pending_calls),
        "properties_set": out.properties_set.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect::<BTreeMap<_, _>>(),
        "fuel": out.fuel,
        "hostcalls": out.hostcalls,
        "traps": out.traps,
    })
}
