//! Each proxy callback as one function over [`Host`]: read the few values needed, ask
//! [`crate::logic`], carry the [`Effects`](meshward_core::effects::Effects) out with
//! [`apply`] (the stream's own callback) or [`resume`] (a waiting stream, from the root's
//! callback). Host-agnostic, so the unit tests run it on `MockHost`; `plugin` only maps the
//! SDK's callbacks here.
//!
//! Ordering rule in root callbacks: dispatch the fetch **before** resuming anyone. `resume`
//! leaves the effective context on the last stream it touched, and Envoy binds an
//! `http_call` to the effective context — a fetch dispatched then would belong to that stream
//! and be cancelled when it ends, leaving the other waiters to time out.

use std::cell::RefCell;

use meshward_core::effects::{Action, Callout, Effects, apply, resume};
use meshward_core::host::{BufferKind, Host, HttpCall, MapKind};
use meshward_core::plugin::{FailureMode, on_error};

use crate::logic::{self, Answer, Arrival, FetchError, KICK_MS, MAX_TOKEN_BYTES, TokenCache};

/// The cell is only ever borrowed inside one callback and callbacks never nest; a failed
/// borrow would be a filter bug, reported instead of panicking.
const BUSY: &str = "token cache already borrowed";

/// Request headers of stream `context_id`.
pub fn on_request_headers(
    host: &(impl Host + ?Sized),
    cache: &RefCell<TokenCache>,
    context_id: u32,
) -> Action {
    let now = match host.now() {
        Ok(now) => now,
        Err(error) => return fail(host, &error),
    };
    let Ok(mut cache) = cache.try_borrow_mut() else {
        return fail(host, &BUSY);
    };
    let result = match cache.on_request(context_id, now) {
        Arrival::Forward => apply(
            host,
            MapKind::RequestHeaders,
            &logic::forward(cache.token().unwrap_or_default()),
        ),
        Arrival::Wait { kick } => {
            if kick && let Err(error) = host.set_tick_period(KICK_MS) {
                // The regular sweep tick dispatches the fetch instead, a little later.
                log::warn!("cannot kick the root's timer: {error}");
            }
            return Action::Pause;
        }
        Arrival::Overloaded => apply(host, MapKind::RequestHeaders, &logic::overloaded()),
    };
    match result {
        Ok(applied) => applied.action,
        Err(error) => {
            // Nothing may keep waiting for a stream that failed here.
            cache.forget(context_id);
            fail(host, &error)
        }
    }
}

/// The stream ended (`on_done`, or its context is deleted): it waits no more.
pub fn on_stream_end(cache: &RefCell<TokenCache>, context_id: u32) {
    match cache.try_borrow_mut() {
        Ok(mut cache) => {
            if cache.forget(context_id) {
                log::debug!("stream ended while waiting for the token");
            }
        }
        Err(_) => log::error!("{BUSY}"),
    }
}

/// The root's tick: dispatch a wanted fetch, restore the sweep period after a kick, answer
/// expired waiters with 504.
pub fn on_tick(host: &(impl Host + ?Sized), cache: &RefCell<TokenCache>) {
    let now = match host.now() {
        Ok(now) => now,
        Err(error) => {
            log::error!("cannot read the clock: {error}");
            return;
        }
    };
    let Ok(mut cache) = cache.try_borrow_mut() else {
        log::error!("{BUSY}");
        return;
    };
    let plan = cache.on_tick(now);
    if plan.restore_period
        && let Err(error) = host.set_tick_period(cache.config().tick_ms)
    {
        log::warn!("cannot restore the tick period: {error}");
    }
    if plan.fetch {
        let dispatched = {
            let config = cache.config();
            let headers = config.fetch_headers();
            let mut effects = Effects::new();
            effects.callout = Some(Callout::Http(HttpCall {
                cluster: &config.cluster,
                headers: &headers,
                timeout_ms: config.timeout_ms,
                ..HttpCall::default()
            }));
            // No header operation: the map kind is irrelevant in a root callback.
            apply(host, MapKind::RequestHeaders, &effects)
        };
        let refused = match dispatched {
            Ok(applied) => match applied.callout_token {
                Some(token) => {
                    cache.dispatched(token);
                    None
                }
                None => Some("no callout token".to_owned()),
            },
            Err(error) => Some(error.to_string()),
        };
        if let Some(why) = refused {
            let answered = cache.dispatch_failed(FetchError::Dispatch(why));
            answer(host, &cache, &answered);
        }
    }
    for waiter in plan.expired {
        if let Err(error) = resume(host, waiter.context_id, &logic::timed_out()) {
            log::warn!(
                "cannot answer stream {} after its deadline: {error}",
                waiter.context_id
            );
        }
    }
}

/// The root's `on_http_call_response` for callout `call` (`num_headers` 0: failed delivery).
pub fn on_http_call_response(
    host: &(impl Host + ?Sized),
    cache: &RefCell<TokenCache>,
    call: u32,
    num_headers: usize,
) {
    let result = read_token(host, num_headers);
    let Ok(mut cache) = cache.try_borrow_mut() else {
        log::error!("{BUSY}");
        return;
    };
    match cache.on_response(call, result) {
        Some(answered) => answer(host, &cache, &answered),
        None => log::warn!("ignoring the answer to callout {call}: not the token fetch in flight"),
    }
}

fn read_token(host: &(impl Host + ?Sized), num_headers: usize) -> Result<Vec<u8>, FetchError> {
    if num_headers == 0 {
        let (code, message) = host.call_status().unwrap_or((0, None));
        return logic::token_from_response(
            0,
            (code, message.as_deref().unwrap_or_default()),
            None,
            None,
        );
    }
    let status = host
        .header(MapKind::HttpCallResponseHeaders, ":status")
        .map_err(|e| FetchError::Status(format!("unreadable: {e}")))?;
    // One byte more than allowed, to tell "too long" from "just fits".
    let body = host
        .buffer(BufferKind::HttpCallResponseBody, 0, MAX_TOKEN_BYTES + 1)
        .map_err(|_| FetchError::BadToken("unreadable body"))?;
    logic::token_from_response(num_headers, (0, b""), status.as_deref(), body.as_deref())
}

/// Resumes (token) or answers 503 (failure) every stream the answer names.
fn answer(host: &(impl Host + ?Sized), cache: &TokenCache, answered: &Answer) {
    let (waiters, effects) = match answered {
        Answer::Token(waiters) => (waiters, logic::forward(cache.token().unwrap_or_default())),
        Answer::Failed(waiters, error) => {
            if !waiters.is_empty() {
                log::warn!(
                    "{error}: answering {} waiting streams with 503",
                    waiters.len()
                );
            }
            (waiters, logic::failed())
        }
    };
    for waiter in waiters {
        if let Err(error) = resume(host, waiter.context_id, &effects) {
            log::warn!("cannot resume stream {}: {error}", waiter.context_id);
        }
    }
}

fn fail(host: &(impl Host + ?Sized), error: &dyn std::fmt::Display) -> Action {
    on_error(host, FailureMode::Deny, logic::DETAILS_FAILED, error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use meshward_core::host::mock::{Hostcall, MockHost};
    use meshward_core::host::{HostError, LocalResponse};

    use super::*;
    use crate::config::Config;
    use crate::logic::{DETAILS_FAILED, DETAILS_OVERLOADED, DETAILS_TIMEOUT, TOKEN_HEADER};

    const MS: u64 = 1_000_000;

    fn cache(max_waiters: usize) -> RefCell<TokenCache> {
        RefCell::new(TokenCache::new(Config {
            max_waiters,
            wait_ms: 100,
            tick_ms: 50,
            ..Config::default()
        }))
    }

    fn replies(host: &MockHost) -> Vec<(u16, String)> {
        host.local_responses()
            .into_iter()
            .map(
                |LocalResponse {
                     status, details, ..
                 }| (status, details),
            )
            .collect()
    }

    /// A root host as it looks inside `on_http_call_response` for this answer.
    fn root_answered(status: &str, body: &str) -> MockHost {
        MockHost::new()
            .with_header(MapKind::HttpCallResponseHeaders, ":status", status)
            .with_buffer(BufferKind::HttpCallResponseBody, body)
    }

    #[test]
    fn waiters_are_resumed_with_the_token_from_the_roots_callback() {
        let cache = cache(8);
        let stream = MockHost::new().with_request_header(":path", "/a");
        assert_eq!(on_request_headers(&stream, &cache, 2), Action::Pause);
        assert_eq!(
            stream.tick_period(),
            KICK_MS,
            "the first waiter kicks the root"
        );
        assert_eq!(on_request_headers(&stream, &cache, 3), Action::Pause);

        let root = root_answered("200", "tok-1\n");
        root.set_tick_period(KICK_MS).unwrap();
        on_tick(&root, &cache);
        assert_eq!(root.tick_period(), 50, "the sweep period is back");
        let calls = root.http_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].cluster, "token-service");
        assert!(
            calls[0]
                .headers
                .contains(&(":path".to_owned(), b"/token".to_vec()))
        );

        on_http_call_response(&root, &cache, 4, 1);
        assert_eq!(root.effective_contexts(), [2, 3]);
        assert_eq!(root.resumed_requests(), 2);
        assert_eq!(root.request_header(TOKEN_HEADER).as_deref(), Some("tok-1"));
        assert!(root.local_responses().is_empty());

        let later = MockHost::new();
        assert_eq!(on_request_headers(&later, &cache, 5), Action::Continue);
        assert_eq!(later.request_header(TOKEN_HEADER).as_deref(), Some("tok-1"));
        on_tick(&later, &cache);
        assert!(later.http_calls().is_empty(), "cached: no callout");
    }

    #[test]
    fn a_failed_or_refused_fetch_answers_every_waiter_503() {
        for delivery in ["reset", "500", "empty"] {
            let cache = cache(8);
            let stream = MockHost::new();
            on_request_headers(&stream, &cache, 2);
            on_request_headers(&stream, &cache, 3);
            let (root, num_headers) = match delivery {
                "reset" => {
                    let root = MockHost::new();
                    root.set_call_status(11, Some(b"reset"));
                    (root, 0)
                }
                "500" => (root_answered("500", "tok"), 1),
                _ => (root_answered("200", " \n"), 1),
            };
            on_tick(&root, &cache);
            on_http_call_response(&root, &cache, 4, num_headers);
            assert_eq!(root.effective_contexts(), [2, 3], "{delivery}");
            assert_eq!(
                replies(&root),
                [
                    (503, DETAILS_FAILED.to_owned()),
                    (503, DETAILS_FAILED.to_owned())
                ]
            );
            assert_eq!(root.resumed_requests(), 0);
        }
        // The proxy refuses the call itself (e.g. an unknown cluster).
        let cache = cache(8);
        on_request_headers(&MockHost::new(), &cache, 2);
        let root = MockHost::new().failing_next(Hostcall::HttpCall, HostError::BadArgument, 1);
        on_tick(&root, &cache);
        assert_eq!(replies(&root), [(503, DETAILS_FAILED.to_owned())]);
    }

    #[test]
    fn waiters_past_their_deadline_get_504_and_ended_streams_are_forgotten() {
        let cache = cache(8);
        let stream = MockHost::new();
        on_request_headers(&stream, &cache, 2);
        stream.advance(10 * MS);
        on_request_headers(&stream, &cache, 3);
        on_request_headers(&stream, &cache, 4);
        on_stream_end(&cache, 4);
        let root = MockHost::new();
        root.set_time(stream.time());
        on_tick(&root, &cache);
        assert!(root.local_responses().is_empty());
        root.advance(90 * MS);
        on_tick(&root, &cache);
        assert_eq!(root.effective_contexts(), [2]);
        assert_eq!(replies(&root), [(504, DETAILS_TIMEOUT.to_owned())]);
        root.advance(10 * MS);
        on_tick(&root, &cache);
        assert_eq!(root.effective_contexts(), [2, 3], "4 ended: never answered");
        assert_eq!(cache.borrow().waiting(), 0);
    }

    #[test]
    fn beyond_capacity_a_request_gets_503_at_once() {
        let cache = cache(1);
        let host = MockHost::new();
        assert_eq!(on_request_headers(&host, &cache, 2), Action::Pause);
        assert_eq!(on_request_headers(&host, &cache, 3), Action::Pause);
        assert_eq!(replies(&host), [(503, DETAILS_OVERLOADED.to_owned())]);
    }

    #[test]
    fn host_failures_fail_closed_without_panicking() {
        let cache = cache(4);
        let host = MockHost::new().failing_next(Hostcall::Now, HostError::InternalFailure, 1);
        assert_eq!(on_request_headers(&host, &cache, 2), Action::Pause);
        assert_eq!(replies(&host), [(503, DETAILS_FAILED.to_owned())]);
        let _held = cache.borrow();
        let host = MockHost::new();
        assert_eq!(on_request_headers(&host, &cache, 3), Action::Pause);
        assert_eq!(replies(&host), [(503, DETAILS_FAILED.to_owned())]);
    }
}
