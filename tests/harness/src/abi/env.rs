//! `env.proxy_*` hostcalls with Envoy's semantics and status codes (ABI notes §2, §6).

use wasmtime::Linker;

use super::mem::{Cx, enter, read, return_bytes, write_u32, write_u64};
use super::status::{
    BAD_ARGUMENT, CAS_MISMATCH, EMPTY, INTERNAL_FAILURE, INVALID_MEMORY_ACCESS, NOT_FOUND, OK,
    PARSE_FAILURE, UNIMPLEMENTED,
};
use crate::grpc::{Target, resolve_target};
use crate::properties::{self, FILTER_STATE_PREFIX};
use crate::shared::{MetricType, MetricValue, Queue, WASM_STAT_PREFIX};
use crate::types::{HeaderMap, LocalReply, LogLevel};
use crate::vm::{Deferred, HostState, NewCall, NewGrpcCall};
use crate::wire;

pub(super) const NAMES: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_header_map_size",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_call_foreign_function",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
];

fn string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn decode_headers(bytes: &[u8]) -> HeaderMap {
    // Envoy parses strictly and treats any violation (or > 1024 pairs / 1 MiB) as an empty map.
    let pairs = wire::decode_map(bytes).unwrap_or_default();
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(&string(&k), v);
    }
    map
}

/// Where a map type lives right now.
enum MapRef {
    Stream(usize),
    CallHeaders,
    CallTrailers,
    /// gRPC metadata: never available in this host.
    Unavailable,
}

fn map_ref(map_type: i32) -> Option<MapRef> {
    match map_type {
        0..=3 => Some(MapRef::Stream(map_type as usize)),
        4 | 5 => Some(MapRef::Unavailable),
        6 => Some(MapRef::CallHeaders),
        7 => Some(MapRef::CallTrailers),
        _ => None,
    }
}

fn readable_map(state: &HostState, r: &MapRef) -> Option<HeaderMap> {
    match r {
        MapRef::Stream(slot) => state
            .acting_stream()
            .and_then(|s| s.maps.get(*slot))
            .and_then(Clone::clone),
        MapRef::CallHeaders => state.call_response.as_ref().map(|c| c.headers.clone()),
        MapRef::CallTrailers => state.call_response.as_ref().map(|c| c.trailers.clone()),
        MapRef::Unavailable => None,
    }
}

/// Applies `f` to a writable map; BadArgument when the map is not available or read-only.
fn with_writable_map(c: &mut Cx<'_>, map_type: i32, f: impl FnOnce(&mut HeaderMap)) -> i32 {
    let Some(MapRef::Stream(slot)) = map_ref(map_type) else {
        return BAD_ARGUMENT;
    };
    let legacy = c.data().plugin.legacy_route_cache;
    let state = c.data_mut();
    let Some(map) = state
        .acting_stream_mut()
        .and_then(|s| s.maps.get_mut(slot))
        .and_then(Option::as_mut)
    else {
        return BAD_ARGUMENT;
    };
    f(map);
    if legacy && slot == crate::vm::REQUEST_HEADERS {
        state.route_cache_cleared = true;
    }
    OK
}

fn buffer_bytes(state: &HostState, buffer_type: i32) -> Result<Vec<u8>, i32> {
    match buffer_type {
        0 | 1 => Ok(state
            .acting_stream()
            .and_then(|s| s.bodies.get(buffer_type as usize))
            .and_then(Clone::clone)
            .unwrap_or_default()),
        4 => state
            .call_response
            .as_ref()
            .map(|c| c.body.clone())
            .ok_or(NOT_FOUND),
        5 => state.grpc_message.clone().ok_or(NOT_FOUND),
        6 => Ok(state.plugin.vm_configuration.clone()),
        7 if state.plugin_config_readable => Ok(state.plugin.configuration.clone()),
        8 => state.foreign_args.clone().ok_or(NOT_FOUND),
        2 | 3 | 7 => Err(NOT_FOUND),
        _ => Err(BAD_ARGUMENT),
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one registration per import keeps the ABI surface in one place"
)]
pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const E: &str = "env";

    // --- logging, time, timers -------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_log",
        |mut c: Cx<'_>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_log", true, true)?;
            let Some(level) = LogLevel::from_abi(level) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(msg) = read(&mut c, ptr, len) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            c.data_mut().log(level, string(&msg));
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_get_log_level",
        |mut c: Cx<'_>, ret: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_log_level", false, false)?;
            let level = c.data().plugin.log_level.as_abi() as u32;
            Ok(if write_u32(&mut c, ret, level) {
                OK
            } else {
                INVALID_MEMORY_ACCESS
            })
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_get_current_time_nanoseconds",
        |mut c: Cx<'_>, ret: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_current_time_nanoseconds", false, false)?;
            let now = c.data().shared.clock().wall_ns();
            Ok(if write_u64(&mut c, ret, now) {
                OK
            } else {
                INVALID_MEMORY_ACCESS
            })
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_set_tick_period_milliseconds",
        |mut c: Cx<'_>, period: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_set_tick_period_milliseconds", false, false)?;
            c.data_mut().tick_period_ms = Some(period as u32);
            Ok(OK)
        },
    )?;

    // --- buffers ---------------------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_get_buffer_bytes",
        |mut c: Cx<'_>,
         buffer_type: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_buffer_bytes", false, false)?;
            let bytes = match buffer_bytes(c.data(), buffer_type) {
                Ok(b) => b,
                Err(status) => return Ok(status),
            };
            let start = u64::from(start as u32);
            let end = start
                .saturating_add(u64::from(max as u32))
                .min(bytes.len() as u64);
            let slice = if start >= bytes.len() as u64 {
                &[][..]
            } else {
                bytes.get(start as usize..end as usize).unwrap_or_default()
            };
            return_bytes(&mut c, slice, ret_ptr, ret_len)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_set_buffer_bytes",
        |mut c: Cx<'_>,
         buffer_type: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_set_buffer_bytes", false, false)?;
            let Some(data) = read(&mut c, ptr, len) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            match buffer_type {
                0 | 1 => {}
                // Downstream/upstream data and gRPC buffers do not exist on an HTTP stream.
                2 | 3 | 5 => return Ok(NOT_FOUND),
                // Configuration, call responses and call data are immutable; > 8 is unknown.
                _ => return Ok(BAD_ARGUMENT),
            }
            let Some(body) = c
                .data_mut()
                .acting_stream_mut()
                .and_then(|s| s.bodies.get_mut(buffer_type as usize))
                .and_then(Option::as_mut)
            else {
                return Ok(NOT_FOUND);
            };
            let (start, size) = (start as u32 as usize, size as u32 as usize);
            if start == 0 {
                let drop = size.min(body.len());
                let mut next = data;
                next.extend_from_slice(body.get(drop..).unwrap_or_default());
                *body = next;
            } else if start >= body.len() {
                body.extend_from_slice(&data);
            } else {
                return Ok(BAD_ARGUMENT);
            }
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_get_buffer_status",
        |mut c: Cx<'_>, buffer_type: i32, ret_len: i32, ret_flags: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_buffer_status", false, false)?;
            let bytes = match buffer_bytes(c.data(), buffer_type) {
                Ok(b) => b,
                Err(status) => return Ok(status),
            };
            let ok =
                write_u32(&mut c, ret_len, bytes.len() as u32) && write_u32(&mut c, ret_flags, 0);
            Ok(if ok { OK } else { INVALID_MEMORY_ACCESS })
        },
    )?;

    // --- header maps -----------------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_get_header_map_pairs",
        |mut c: Cx<'_>, map_type: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_header_map_pairs", false, false)?;
            let Some(r) = map_ref(map_type) else {
                return Ok(BAD_ARGUMENT);
            };
            let bytes = match readable_map(c.data(), &r) {
                Some(map) if !map.is_empty() => {
                    wire::encode_map(map.iter().map(|(k, v)| (k.as_bytes(), v)))
                }
                _ => Vec::new(),
            };
            return_bytes(&mut c, &bytes, ret_ptr, ret_len)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_set_header_map_pairs",
        |mut c: Cx<'_>, map_type: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_set_header_map_pairs", false, false)?;
            let Some(bytes) = read(&mut c, ptr, len) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let new_map = decode_headers(&bytes);
            Ok(with_writable_map(&mut c, map_type, |map| *map = new_map))
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_get_header_map_value",
        |mut c: Cx<'_>,
         map_type: i32,
         kptr: i32,
         klen: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_header_map_value", false, false)?;
            let Some(key) = read(&mut c, kptr, klen) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let Some(r) = map_ref(map_type) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(map) = readable_map(c.data(), &r) else {
                let in_log = c.data().acting_stream().is_some_and(|s| s.in_log);
                return Ok(if in_log { NOT_FOUND } else { BAD_ARGUMENT });
            };
            match map.get_bytes(&string(&key)) {
                Some(value) => {
                    let value = value.to_vec();
                    return_bytes(&mut c, &value, ret_ptr, ret_len)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_add_header_map_value",
        |mut c: Cx<'_>,
         map_type: i32,
         kptr: i32,
         klen: i32,
         vptr: i32,
         vlen: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_add_header_map_value", false, false)?;
            let (Some(key), Some(value)) = (read(&mut c, kptr, klen), read(&mut c, vptr, vlen))
            else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            Ok(with_writable_map(&mut c, map_type, |map| {
                map.append(&string(&key), value)
            }))
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_replace_header_map_value",
        |mut c: Cx<'_>,
         map_type: i32,
         kptr: i32,
         klen: i32,
         vptr: i32,
         vlen: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_replace_header_map_value", false, false)?;
            let (Some(key), Some(value)) = (read(&mut c, kptr, klen), read(&mut c, vptr, vlen))
            else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            Ok(with_writable_map(&mut c, map_type, |map| {
                map.insert(&string(&key), value)
            }))
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_remove_header_map_value",
        |mut c: Cx<'_>, map_type: i32, kptr: i32, klen: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_remove_header_map_value", false, false)?;
            let Some(key) = read(&mut c, kptr, klen) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            Ok(with_writable_map(&mut c, map_type, |map| {
                map.remove(&string(&key));
            }))
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_get_header_map_size",
        |mut c: Cx<'_>, map_type: i32, ret: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_header_map_size", false, false)?;
            let Some(r) = map_ref(map_type) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(map) = readable_map(c.data(), &r) else {
                return Ok(BAD_ARGUMENT);
            };
            Ok(if write_u32(&mut c, ret, map.byte_size() as u32) {
                OK
            } else {
                INVALID_MEMORY_ACCESS
            })
        },
    )?;

    // --- properties ------------------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_get_property",
        |mut c: Cx<'_>, ptr: i32, len: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_property", false, false)?;
            let Some(path) = read(&mut c, ptr, len) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            match properties::get(c.data(), &wire::decode_path(&path)) {
                Ok(bytes) => return_bytes(&mut c, &bytes, ret_ptr, ret_len),
                Err(status) => Ok(status),
            }
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_set_property",
        |mut c: Cx<'_>, ptr: i32, len: i32, vptr: i32, vlen: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_set_property", false, false)?;
            let (Some(path), Some(value)) = (read(&mut c, ptr, len), read(&mut c, vptr, vlen))
            else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let Some(stream) = c.data().acting_stream() else {
                return Ok(NOT_FOUND);
            };
            stream
                .filter_state
                .set(&format!("{FILTER_STATE_PREFIX}{}", string(&path)), value);
            Ok(OK)
        },
    )?;

    // --- shared data -----------------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_get_shared_data",
        |mut c: Cx<'_>,
         kptr: i32,
         klen: i32,
         ret_ptr: i32,
         ret_len: i32,
         ret_cas: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_shared_data", false, false)?;
            let Some(key) = read(&mut c, kptr, klen) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let vm_id = c.data().plugin.vm_id.clone();
            let found = c
                .data()
                .shared
                .tables()
                .data
                .get(&vm_id)
                .and_then(|m| m.get(&string(&key)))
                .cloned();
            let Some((value, cas)) = found else {
                return Ok(NOT_FOUND);
            };
            if !write_u32(&mut c, ret_cas, cas) {
                return Ok(INVALID_MEMORY_ACCESS);
            }
            return_bytes(&mut c, &value, ret_ptr, ret_len)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_set_shared_data",
        |mut c: Cx<'_>,
         kptr: i32,
         klen: i32,
         vptr: i32,
         vlen: i32,
         cas: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_set_shared_data", false, false)?;
            let (Some(key), Some(value)) = (read(&mut c, kptr, klen), read(&mut c, vptr, vlen))
            else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let vm_id = c.data().plugin.vm_id.clone();
            let mut tables = c.data().shared.tables();
            let key = string(&key);
            if cas != 0 {
                // Fault injection (`SharedState::inject_cas_races`/`inject_creation_race`): another
                // worker writes first.
                tables.race_before_cas_write(&vm_id, &key);
            }
            let existing = tables
                .data
                .get(&vm_id)
                .and_then(|m| m.get(&key))
                .map(|(_, cas)| *cas);
            // cpp-host: cas 0 = unconditional; a cas on a missing key is ignored (insert).
            if let Some(current) = existing
                && cas != 0
                && current != cas as u32
            {
                return Ok(CAS_MISMATCH);
            }
            let new_cas = tables.next_cas();
            tables
                .data
                .entry(vm_id)
                .or_default()
                .insert(key, (value, new_cas));
            Ok(OK)
        },
    )?;

    // --- shared queues ---------------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_register_shared_queue",
        |mut c: Cx<'_>, nptr: i32, nlen: i32, ret: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_register_shared_queue", false, false)?;
            let Some(name) = read(&mut c, nptr, nlen) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let name = string(&name);
            let (vm_id, uid, worker, root) = (
                c.data().plugin.vm_id.clone(),
                c.data().plugin.uid,
                c.data().worker,
                c.data().root_ctx,
            );
            let token = {
                let mut t = c.data().shared.tables();
                let existing = t
                    .queues
                    .iter()
                    .find(|(_, q)| q.vm_id == vm_id && q.name == name)
                    .map(|(k, _)| *k);
                let token = match existing {
                    Some(token) => token,
                    None => {
                        t.next_queue_token += 1;
                        let token = t.next_queue_token;
                        t.queues.insert(
                            token,
                            Queue {
                                vm_id,
                                name,
                                items: std::collections::VecDeque::new(),
                                registrant: None,
                            },
                        );
                        token
                    }
                };
                if let Some(q) = t.queues.get_mut(&token) {
                    q.registrant = Some((uid, worker, root));
                }
                token
            };
            Ok(if write_u32(&mut c, ret, token) {
                OK
            } else {
                INVALID_MEMORY_ACCESS
            })
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_resolve_shared_queue",
        |mut c: Cx<'_>,
         vptr: i32,
         vlen: i32,
         nptr: i32,
         nlen: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_resolve_shared_queue", false, false)?;
            let (Some(vm_id), Some(name)) = (read(&mut c, vptr, vlen), read(&mut c, nptr, nlen))
            else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let vm_id = if vm_id.is_empty() {
                c.data().plugin.vm_id.clone()
            } else {
                string(&vm_id)
            };
            let name = string(&name);
            let found = c
                .data()
                .shared
                .tables()
                .queues
                .iter()
                .find(|(_, q)| q.vm_id == vm_id && q.name == name)
                .map(|(k, _)| *k);
            match found {
                Some(token) => Ok(if write_u32(&mut c, ret, token) {
                    OK
                } else {
                    INVALID_MEMORY_ACCESS
                }),
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_enqueue_shared_queue",
        |mut c: Cx<'_>, token: i32, vptr: i32, vlen: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_enqueue_shared_queue", false, false)?;
            let Some(value) = read(&mut c, vptr, vlen) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let mut t = c.data().shared.tables();
            let Some(q) = t.queues.get_mut(&(token as u32)) else {
                return Ok(NOT_FOUND);
            };
            q.items.push_back(value);
            if let Some((uid, worker, root)) = q.registrant {
                t.queue_notifications
                    .push((uid, worker, root, token as u32));
            }
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_dequeue_shared_queue",
        |mut c: Cx<'_>, token: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_dequeue_shared_queue", false, false)?;
            let item = {
                let mut t = c.data().shared.tables();
                let Some(q) = t.queues.get_mut(&(token as u32)) else {
                    return Ok(NOT_FOUND);
                };
                q.items.pop_front()
            };
            match item {
                Some(value) => return_bytes(&mut c, &value, ret_ptr, ret_len),
                None => Ok(EMPTY),
            }
        },
    )?;

    // --- stream control --------------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_continue_stream",
        |mut c: Cx<'_>, stream_type: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_continue_stream", false, false)?;
            match stream_type {
                0..=2 => {
                    let ctx = c.data().acting_ctx();
                    c.data_mut()
                        .deferred
                        .push(Deferred::Continue { ctx, stream_type });
                    Ok(OK)
                }
                3 => Ok(UNIMPLEMENTED),
                _ => Ok(BAD_ARGUMENT),
            }
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_close_stream",
        |mut c: Cx<'_>, stream_type: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_close_stream", false, false)?;
            if !(0..=3).contains(&stream_type) {
                return Ok(BAD_ARGUMENT);
            }
            let ctx = c.data().acting_ctx();
            c.data_mut().deferred.push(Deferred::Close { ctx });
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_send_local_response",
        |mut c: Cx<'_>,
         code: i32,
         dptr: i32,
         dlen: i32,
         bptr: i32,
         blen: i32,
         hptr: i32,
         hlen: i32,
         grpc: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_send_local_response", false, false)?;
            let (Some(details), Some(body), Some(headers)) = (
                read(&mut c, dptr, dlen),
                read(&mut c, bptr, blen),
                read(&mut c, hptr, hlen),
            ) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let details: String = string(&details)
                .chars()
                .map(|ch| if ch.is_whitespace() { '_' } else { ch })
                .collect();
            let reply = LocalReply {
                status: code as u32,
                headers: decode_headers(&headers),
                body,
                details,
                grpc_status: u32::try_from(grpc).ok().filter(|g| *g <= 16),
            };
            let ctx = c.data().acting_ctx();
            c.data_mut()
                .deferred
                .push(Deferred::LocalReply { ctx, reply });
            Ok(OK)
        },
    )?;

    // --- callouts --------------------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_http_call",
        |mut c: Cx<'_>,
         uptr: i32,
         ulen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         tptr: i32,
         tlen: i32,
         timeout: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_http_call", false, false)?;
            let (Some(cluster), Some(headers), Some(body), Some(trailers)) = (
                read(&mut c, uptr, ulen),
                read(&mut c, hptr, hlen),
                read(&mut c, bptr, blen),
                read(&mut c, tptr, tlen),
            ) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let cluster = string(&cluster);
            if !c.data().shared.cluster_known(&cluster) {
                return Ok(BAD_ARGUMENT);
            }
            let mut headers = decode_headers(&headers);
            if [":path", ":method", ":authority"]
                .iter()
                .any(|h| !headers.contains(h))
            {
                return Ok(BAD_ARGUMENT);
            }
            if timeout < 0 {
                return Ok(BAD_ARGUMENT);
            }
            if !body.is_empty() {
                headers.insert("content-length", body.len().to_string());
            }
            let state = c.data_mut();
            state.next_call_n += 1;
            let token = state.next_call_n.wrapping_mul(4);
            let ctx = state.acting_ctx();
            state.new_calls.push(NewCall {
                token,
                ctx,
                cluster,
                headers,
                body,
                trailers: decode_headers(&trailers),
                timeout_ms: timeout as u32,
            });
            Ok(if write_u32(&mut c, ret, token) {
                OK
            } else {
                INVALID_MEMORY_ACCESS
            })
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_grpc_call",
        |mut c: Cx<'_>,
         cluster_ptr: i32,
         cluster_len: i32,
         service_ptr: i32,
         service_len: i32,
         method_ptr: i32,
         method_len: i32,
         md_ptr: i32,
         md_len: i32,
         msg_ptr: i32,
         msg_len: i32,
         timeout: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_grpc_call", false, false)?;
            let (Some(cluster), Some(service), Some(method), Some(metadata), Some(message)) = (
                read(&mut c, cluster_ptr, cluster_len),
                read(&mut c, service_ptr, service_len),
                read(&mut c, method_ptr, method_len),
                read(&mut c, md_ptr, md_len),
                read(&mut c, msg_ptr, msg_len),
            ) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let shared = c.data().shared.clone();
            let (cluster, authority) =
                match resolve_target(&cluster, |name| shared.cluster_known(name)) {
                    Target::Cluster { name, authority } => (name, authority),
                    Target::UnknownName => return Ok(PARSE_FAILURE),
                    Target::Refused => return Ok(INTERNAL_FAILURE),
                };
            if timeout < 0 {
                return Ok(BAD_ARGUMENT);
            }
            let state = c.data_mut();
            state.next_grpc_call_n += 1;
            let token = state.next_grpc_call_n.wrapping_mul(4).wrapping_add(1);
            let ctx = state.acting_ctx();
            state.grpc_calls.insert(
                token,
                NewGrpcCall {
                    ctx,
                    cluster,
                    authority,
                    service: string(&service),
                    method: string(&method),
                    metadata: decode_headers(&metadata),
                    message,
                    timeout_ms: timeout as u32,
                },
            );
            Ok(if write_u32(&mut c, ret, token) {
                OK
            } else {
                INVALID_MEMORY_ACCESS
            })
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_grpc_stream",
        |mut c: Cx<'_>,
         _a: i32,
         _b: i32,
         _c3: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _ret: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_grpc_stream", false, false)?;
            c.data_mut().log(
                LogLevel::Warn,
                "meshward-host: gRPC streams are not implemented".to_owned(),
            );
            Ok(INTERNAL_FAILURE)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_grpc_send",
        |mut c: Cx<'_>, _t: i32, _p: i32, _l: i32, _e: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_grpc_send", false, false)?;
            Ok(NOT_FOUND)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_grpc_cancel",
        |mut c: Cx<'_>, token: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_grpc_cancel", false, false)?;
            // No callback follows; an answer already on its way is dropped.
            let live = c.data_mut().grpc_calls.remove(&(token as u32)).is_some();
            Ok(if live { OK } else { NOT_FOUND })
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_grpc_close",
        |mut c: Cx<'_>, token: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_grpc_close", false, false)?;
            // For a unary call Envoy's close is a cancel.
            let live = c.data_mut().grpc_calls.remove(&(token as u32)).is_some();
            Ok(if live { OK } else { NOT_FOUND })
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_get_status",
        |mut c: Cx<'_>, ret_code: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_status", false, false)?;
            let (code, message) = c.data().status.clone();
            if !write_u32(&mut c, ret_code, code) {
                return Ok(INVALID_MEMORY_ACCESS);
            }
            return_bytes(&mut c, &message, ret_ptr, ret_len)
        },
    )?;

    // --- contexts and misc -----------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_set_effective_context",
        |mut c: Cx<'_>, ctx: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_set_effective_context", false, false)?;
            let ctx = ctx as u32;
            let state = c.data_mut();
            if ctx == state.root_ctx || state.streams.contains_key(&ctx) {
                state.effective_ctx = Some(ctx);
                Ok(OK)
            } else {
                Ok(BAD_ARGUMENT)
            }
        },
    )?;
    linker.func_wrap(E, "proxy_done", |mut c: Cx<'_>| -> wasmtime::Result<i32> {
        enter(&mut c, "proxy_done", false, false)?;
        let state = c.data_mut();
        if state.root_done_pending {
            state.done_called = true;
            Ok(OK)
        } else {
            Ok(NOT_FOUND)
        }
    })?;
    linker.func_wrap(
        E,
        "proxy_call_foreign_function",
        |mut c: Cx<'_>,
         nptr: i32,
         nlen: i32,
         aptr: i32,
         alen: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_call_foreign_function", false, false)?;
            let (Some(name), Some(_args)) = (read(&mut c, nptr, nlen), read(&mut c, aptr, alen))
            else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            match name.as_slice() {
                // Envoy < 1.33 has no such function: NotFound, and any request-header
                // mutation clears the route cache instead (`with_writable_map`).
                b"clear_route_cache" if c.data().plugin.legacy_route_cache => Ok(NOT_FOUND),
                b"clear_route_cache" => {
                    c.data_mut().route_cache_cleared = true;
                    return_bytes(&mut c, &[], ret_ptr, ret_len)
                }
                _ => Ok(NOT_FOUND),
            }
        },
    )?;

    // --- metrics ---------------------------------------------------------------------------
    linker.func_wrap(
        E,
        "proxy_define_metric",
        |mut c: Cx<'_>,
         metric_type: i32,
         nptr: i32,
         nlen: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_define_metric", false, false)?;
            let Some(kind) = MetricType::from_abi(metric_type) else {
                return Ok(BAD_ARGUMENT);
            };
            let Some(name) = read(&mut c, nptr, nlen) else {
                return Ok(INVALID_MEMORY_ACCESS);
            };
            let full = format!("{WASM_STAT_PREFIX}{}", string(&name));
            c.data()
                .shared
                .tables()
                .metrics
                .entry(full.clone())
                .or_insert(MetricValue {
                    kind,
                    value: 0,
                    samples: Vec::new(),
                });
            let state = c.data_mut();
            let slot = kind.as_abi() as usize;
            let Some(next) = state.next_metric_id.get_mut(slot) else {
                return Ok(BAD_ARGUMENT);
            };
            *next += 4;
            let id = *next;
            state.metric_ids.insert(id, full);
            Ok(if write_u32(&mut c, ret, id) {
                OK
            } else {
                INVALID_MEMORY_ACCESS
            })
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_increment_metric",
        |mut c: Cx<'_>, id: i32, delta: i64| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_increment_metric", false, false)?;
            let Some(name) = c.data().metric_ids.get(&(id as u32)).cloned() else {
                return Ok(NOT_FOUND);
            };
            let mut t = c.data().shared.tables();
            let Some(metric) = t.metrics.get_mut(&name) else {
                return Ok(NOT_FOUND);
            };
            match MetricType::from_abi(id & 3) {
                Some(MetricType::Counter) if delta > 0 => {
                    metric.value = metric.value.wrapping_add(delta as u64)
                }
                Some(MetricType::Gauge) => metric.value = metric.value.wrapping_add(delta as u64),
                _ => return Ok(BAD_ARGUMENT),
            }
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_record_metric",
        |mut c: Cx<'_>, id: i32, value: i64| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_record_metric", false, false)?;
            let Some(name) = c.data().metric_ids.get(&(id as u32)).cloned() else {
                return Ok(NOT_FOUND);
            };
            let mut t = c.data().shared.tables();
            let Some(metric) = t.metrics.get_mut(&name) else {
                return Ok(NOT_FOUND);
            };
            let value = value as u64;
            match MetricType::from_abi(id & 3) {
                Some(MetricType::Counter) => metric.value = metric.value.wrapping_add(value),
                Some(MetricType::Gauge) => metric.value = value,
                Some(MetricType::Histogram) => metric.samples.push(value),
                None => return Ok(NOT_FOUND),
            }
            Ok(OK)
        },
    )?;
    linker.func_wrap(
        E,
        "proxy_get_metric",
        |mut c: Cx<'_>, id: i32, ret: i32| -> wasmtime::Result<i32> {
            enter(&mut c, "proxy_get_metric", false, false)?;
            let Some(name) = c.data().metric_ids.get(&(id as u32)).cloned() else {
                return Ok(NOT_FOUND);
            };
            if MetricType::from_abi(id & 3) == Some(MetricType::Histogram) {
                return Ok(BAD_ARGUMENT);
            }
            let value = c.data().shared.tables().metrics.get(&name).map(|m| m.value);
            let Some(value) = value else {
                return Ok(NOT_FOUND);
            };
            Ok(if write_u64(&mut c, ret, value) {
                OK
            } else {
                INVALID_MEMORY_ACCESS
            })
        },
    )?;
    Ok(())
}
