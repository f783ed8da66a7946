//! The per-VM token cache and its waiting streams, as pure decisions (no host), plus the
//! [`Effects`] each decision turns into.
//!
//! One [`TokenCache`] per worker VM, owned by the root context and shared with the VM's
//! stream contexts (`Rc<RefCell<…>>`): a VM's callbacks never nest, so the cell is never
//! borrowed twice. States of the fetch: `Idle` → a stream finds no token → `Wanted` (the stream
//! waits, and kicks the root's timer) → the root's tick dispatches → `InFlight(token)` → the
//! response resumes or fails every waiter → `Idle`.

use meshward_core::effects::Effects;
use meshward_core::host::{LocalReply, Nanos};
use meshward_core::waiters::{Waiter, Waiters};

use crate::config::Config;

/// The request header that carries the token upstream.
pub const TOKEN_HEADER: &str = "x-callout-token";
/// `response_code_details` when the token fetch failed (503).
pub const DETAILS_FAILED: &str = "meshward_callout_failed";
/// `response_code_details` when a stream waited past its deadline (504).
pub const DETAILS_TIMEOUT: &str = "meshward_callout_timeout";
/// `response_code_details` when too many streams already wait (503).
pub const DETAILS_OVERLOADED: &str = "meshward_callout_overloaded";
/// The tick period a stream sets to have its root fetch "now" (see [`Arrival::Wait`]).
pub const KICK_MS: u32 = 1;
/// Longest token accepted from the token service.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Streams wait for the one token of their VM: the waiter key carries nothing.
type Key = ();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// Nothing to do.
    Idle,
    /// A stream needs the token; the next tick dispatches.
    Wanted,
    /// Dispatched; the callout's token.
    InFlight(u32),
}

/// What a new request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The VM has the token: continue with it ([`forward`]).
    Forward,
    /// Pause until the root has the token. With `kick`, the stream sets the root's tick period
    /// to [`KICK_MS`] (`proxy_set_tick_period_milliseconds` applies to the caller's root), so
    /// the fetch leaves from the root's very next callback instead of up to one sweep period
    /// later; the root restores its period on that tick.
    Wait {
        /// Set the root's tick period to [`KICK_MS`].
        kick: bool,
    },
    /// Too many streams wait: answer at once ([`overloaded`]).
    Overloaded,
}

/// What the root's tick does, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TickPlan {
    /// Dispatch the fetch (then report [`TokenCache::dispatched`] or
    /// [`TokenCache::dispatch_failed`]).
    pub fetch: bool,
    /// Set the tick period back to the configured sweep period (a stream kicked it).
    pub restore_period: bool,
    /// Streams past their deadline, to answer with [`timed_out`].
    pub expired: Vec<Waiter<Key>>,
}

/// Why the fetch gave no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The proxy could not dispatch the call.
    #[error("dispatch failed: {0}")]
    Dispatch(String),
    /// The call failed (reset, timeout, no healthy upstream): delivered with no headers.
    #[error("callout failed ({code}: {message})")]
    Reset {
        /// `proxy_get_status` code (Envoy: 11).
        code: u32,
        /// `proxy_get_status` message (Envoy: "reset").
        message: String,
    },
    /// The service answered with another status than 200.
    #[error("token service answered {0}")]
    Status(String),
    /// The body is empty, too long, or not a valid header value.
    #[error("token service sent an unusable token ({0})")]
    BadToken(&'static str),
}

/// What the answer of the fetch does to the waiting streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The token is cached: resume each with [`forward`].
    Token(Vec<Waiter<Key>>),
    /// No token: answer each with [`failed`].
    Failed(Vec<Waiter<Key>>, FetchError),
}

/// The token of one VM and the streams waiting for it; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct TokenCache {
    config: Config,
    token: Option<Vec<u8>>,
    waiters: Waiters<Key>,
    fetch: Fetch,
    kicked: bool,
}

impl TokenCache {
    /// An empty cache.
    pub fn new(config: Config) -> Self {
        let waiters = Waiters::new(config.max_waiters);
        Self {
            config,
            token: None,
            waiters,
            fetch: Fetch::Idle,
            kicked: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cached token, if any.
    pub fn token(&self) -> Option<&[u8]> {
        self.token.as_deref()
    }

    /// Number of streams waiting.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// A request arrives on stream `context_id` at `now`.
    pub fn on_request(&mut self, context_id: u32, now: Nanos) -> Arrival {
        if self.token.is_some() {
            return Arrival::Forward;
        }
        let wait_ns = u64::from(self.config.wait_ms).saturating_mul(1_000_000);
        if self
            .waiters
            .wait(context_id, (), now.saturating_add(wait_ns))
            .is_err()
        {
            return Arrival::Overloaded;
        }
        if self.fetch == Fetch::Idle {
            self.fetch = Fetch::Wanted;
        }
        let kick = self.fetch == Fetch::Wanted && !self.kicked;
        self.kicked |= kick;
        Arrival::Wait { kick }
    }

    /// The stream ended (reset, client gone) while it may have been waiting.
    pub fn forget(&mut self, context_id: u32) -> bool {
        self.waiters.forget(context_id)
    }

    /// The root's tick at `now`.
    pub fn on_tick(&mut self, now: Nanos) -> TickPlan {
        TickPlan {
            fetch: self.fetch == Fetch::Wanted,
            restore_period: std::mem::take(&mut self.kicked),
            expired: self.waiters.take_expired(now),
        }
    }

    /// The fetch left with callout token `call`.
    pub fn dispatched(&mut self, call: u32) {
        self.fetch = Fetch::InFlight(call);
    }

    /// The fetch could not leave: every waiter fails (the next request without a token asks
    /// again).
    pub fn dispatch_failed(&mut self, error: FetchError) -> Answer {
        self.fetch = Fetch::Idle;
        Answer::Failed(self.waiters.take(()), error)
    }

    /// The answer to callout `call`; `None` when it is not the fetch in flight (then nothing
    /// changes).
    pub fn on_response(
        &mut self,
        call: u32,
        result: Result<Vec<u8>, FetchError>,
    ) -> Option<Answer> {
        if self.fetch != Fetch::InFlight(call) {
            return None;
        }
        self.fetch = Fetch::Idle;
        let waiters = self.waiters.take(());
        Some(match result {
            Ok(token) => {
                self.token = Some(token);
                Answer::Token(waiters)
            }
            Err(error) => Answer::Failed(waiters, error),
        })
    }
}

/// The token in a call response: `num_headers` 0 is Envoy's failed delivery (then `status`
/// is `proxy_get_status`); otherwise `:status` must be 200 and the body (surrounding ASCII
/// whitespace trimmed) a non-empty visible-ASCII header value of at most [`MAX_TOKEN_BYTES`].
///
/// # Errors
/// [`FetchError`] saying why there is no token.
pub fn token_from_response(
    num_headers: usize,
    call_status: (u32, &[u8]),
    http_status: Option<&[u8]>,
    body: Option<&[u8]>,
) -> Result<Vec<u8>, FetchError> {
    if num_headers == 0 {
        let (code, message) = call_status;
        return Err(FetchError::Reset {
            code,
            message: String::from_utf8_lossy(message).into_owned(),
        });
    }
    match http_status {
        Some(b"200") => {}
        Some(other) => {
            return Err(FetchError::Status(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
        None => return Err(FetchError::Status("no :status".to_owned())),
    }
    let token = body.unwrap_or_default().trim_ascii();
    if token.is_empty() {
        return Err(FetchError::BadToken("empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(FetchError::BadToken("too long"));
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        return Err(FetchError::BadToken("not a header value"));
    }
    Ok(token.to_vec())
}

/// Continue with the token in [`TOKEN_HEADER`].
pub fn forward(token: &[u8]) -> Effects<'_> {
    let mut effects = Effects::new();
    effects.set_header(TOKEN_HEADER, token);
    effects
}

fn reply(status: u16, details: &'static str) -> Effects<'static> {
    let mut effects = Effects::new();
    effects.reply(LocalReply {
        status,
        details,
        ..LocalReply::default()
    });
    effects
}

/// 503 `meshward_callout_failed`: the token could not be fetched.
pub fn failed() -> Effects<'static> {
    reply(503, DETAILS_FAILED)
}

/// 504 `meshward_callout_timeout`: waited past the deadline.
pub fn timed_out() -> Effects<'static> {
    reply(504, DETAILS_TIMEOUT)
}

/// 503 `meshward_callout_overloaded`: too many streams wait already.
pub fn overloaded() -> Effects<'static> {
    reply(503, DETAILS_OVERLOADED)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use meshward_core::effects::{Flow, HeaderOp};

    use super::*;

    const MS: u64 = 1_000_000;

    fn cache(max_waiters: usize) -> TokenCache {
        TokenCache::new(Config {
            max_waiters,
            wait_ms: 100,
            ..Config::default()
        })
    }

    fn ids(waiters: &[Waiter<Key>]) -> Vec<u32> {
        waiters.iter().map(|w| w.context_id).collect()
    }

    #[test]
    fn the_first_waiter_kicks_the_root_once_and_the_tick_dispatches() {
        let mut cache = cache(4);
        assert_eq!(cache.on_request(2, 0), Arrival::Wait { kick: true });
        assert_eq!(cache.on_request(3, 0), Arrival::Wait { kick: false });
        let plan = cache.on_tick(MS);
        assert!(plan.fetch && plan.restore_period && plan.expired.is_empty());
        cache.dispatched(4);
        assert_eq!(
            cache.on_tick(2 * MS),
            TickPlan::default(),
            "in flight: nothing to do"
        );
        assert_eq!(cache.on_request(5, 2 * MS), Arrival::Wait { kick: false });
        let answer = cache.on_response(4, Ok(b"tok".to_vec())).unwrap();
        assert_eq!(
            answer,
            Answer::Token(cache_waiters(&[2, 3, 5], 100 * MS, 102 * MS))
        );
        assert_eq!(cache.token(), Some(&b"tok"[..]));
        assert_eq!(cache.on_request(6, 3 * MS), Arrival::Forward);
        assert_eq!(cache.waiting(), 0);
    }

    fn cache_waiters(ids: &[u32], first_deadline: Nanos, last_deadline: Nanos) -> Vec<Waiter<Key>> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| Waiter {
                context_id: *id,
                key: (),
                deadline: if i + 1 == ids.len() {
                    last_deadline
                } else {
                    first_deadline
                },
            })
            .collect()
    }

    #[test]
    fn a_failed_fetch_fails_every_waiter_and_the_next_request_asks_again() {
        let mut cache = cache(4);
        cache.on_request(2, 0);
        cache.on_request(3, 0);
        cache.on_tick(MS);
        cache.dispatched(8);
        let error = FetchError::Status("500".to_owned());
        match cache.on_response(8, Err(error.clone())).unwrap() {
            Answer::Failed(waiters, e) => assert_eq!((ids(&waiters), e), (vec![2, 3], error)),
            other => panic!("{other:?}"),
        }
        assert_eq!(cache.token(), None);
        assert_eq!(cache.on_request(4, 2 * MS), Arrival::Wait { kick: true });
        match cache.dispatch_failed(FetchError::Dispatch("bad argument".to_owned())) {
            Answer::Failed(waiters, _) => assert_eq!(ids(&waiters), [4]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unknown_or_stale_call_changes_nothing() {
        let mut cache = cache(4);
        cache.on_request(2, 0);
        cache.on_tick(MS);
        cache.dispatched(4);
        assert_eq!(cache.on_response(8, Ok(b"x".to_vec())), None);
        assert_eq!((cache.waiting(), cache.token()), (1, None));
    }

    #[test]
    fn waiters_expire_at_their_deadline_and_forgotten_ones_are_gone() {
        let mut cache = cache(4);
        cache.on_request(2, 0);
        cache.on_request(3, 50 * MS);
        cache.on_request(4, 60 * MS);
        assert!(cache.forget(4));
        assert!(!cache.forget(4));
        assert!(cache.on_tick(99 * MS).expired.is_empty());
        assert_eq!(ids(&cache.on_tick(100 * MS).expired), [2]);
        assert_eq!(ids(&cache.on_tick(150 * MS).expired), [3]);
        assert_eq!(cache.waiting(), 0);
    }

    #[test]
    fn waiters_are_bounded() {
        let mut cache = cache(2);
        cache.on_request(2, 0);
        cache.on_request(3, 0);
        assert_eq!(cache.on_request(4, 0), Arrival::Overloaded);
        assert_eq!(cache.waiting(), 2);
    }

    #[test]
    fn token_responses_are_validated() {
        let ok = (0, &b""[..]);
        assert_eq!(
            token_from_response(2, ok, Some(b"200"), Some(b" abc\n")),
            Ok(b"abc".to_vec())
        );
        assert_eq!(
            token_from_response(0, (11, b"reset"), None, None),
            Err(FetchError::Reset {
                code: 11,
                message: "reset".to_owned()
            })
        );
        assert_eq!(
            token_from_response(1, ok, Some(b"503"), Some(b"x")),
            Err(FetchError::Status("503".to_owned()))
        );
        assert_eq!(
            token_from_response(1, ok, Some(b"200"), None),
            Err(FetchError::BadToken("empty"))
        );
        assert_eq!(
            token_from_response(1, ok, Some(b"200"), Some(b"a b")),
            Err(FetchError::BadToken("not a header value"))
        );
        let long = vec![b'a'; MAX_TOKEN_BYTES + 1];
        assert_eq!(
            token_from_response(1, ok, Some(b"200"), Some(&long)),
            Err(FetchError::BadToken("too long"))
        );
    }

    #[test]
    fn effects_set_the_header_or_reply_with_details() {
        let effects = forward(b"tok");
        assert_eq!(
            effects.header_ops(),
            [HeaderOp::Set(TOKEN_HEADER, &b"tok"[..])]
        );
        assert_eq!(effects.flow, Flow::Continue);
        for (effects, status, details) in [
            (failed(), 503, DETAILS_FAILED),
            (timed_out(), 504, DETAILS_TIMEOUT),
            (overloaded(), 503, DETAILS_OVERLOADED),
        ] {
            let reply = effects.local_reply.unwrap();
            assert_eq!((reply.status, reply.details), (status, details));
        }
    }
}
