//! What the filter did with each header, as closed enumerations: every outcome is one metric
//! series, defined up front and counted by index (no strings per request).
//!
//! Each family lists all its outcomes in `ALL`; `series()` is the position in that list, and
//! `tags()` the `(action, reason)` tag values of its series.

use crate::request_id::InvalidRequestId;
use crate::traceparent::InvalidTraceParent;
use crate::tracestate::InvalidTraceState;

/// The `(action, reason)` of an outcome, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<A> {
    /// What was done.
    pub action: A,
    /// Why (a bounded `&'static str`).
    pub reason: &'static str,
}

/// What happened to the request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdAction {
    /// None was sent; a new one was generated.
    Generated,
    /// The client's id was kept.
    Kept,
    /// The client's id was replaced.
    Replaced,
}

impl IdAction {
    /// Metric tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Generated => "generated",
            Self::Kept => "kept",
            Self::Replaced => "replaced",
        }
    }
}

/// The request-id outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdOutcome {
    /// No id header (nor alias) was sent.
    GeneratedAbsent,
    /// Kept: it passed validation.
    KeptValid,
    /// Kept: valid and from a trusted peer.
    KeptTrusted,
    /// Replaced: valid, but the peer is not trusted.
    ReplacedUntrusted,
    /// Replaced: the policy replaces every id.
    ReplacedPolicy,
    /// Replaced: it failed validation.
    ReplacedInvalid(InvalidRequestId),
}

impl IdOutcome {
    /// Number of series.
    pub const COUNT: usize = 5 + InvalidRequestId::ALL.len();

    /// Every outcome, in series order.
    pub fn all() -> impl Iterator<Item = Self> {
        [
            Self::GeneratedAbsent,
            Self::KeptValid,
            Self::KeptTrusted,
            Self::ReplacedUntrusted,
            Self::ReplacedPolicy,
        ]
        .into_iter()
        .chain(InvalidRequestId::ALL.into_iter().map(Self::ReplacedInvalid))
    }

    /// The metric series index.
    pub const fn series(self) -> usize {
        match self {
            Self::GeneratedAbsent => 0,
            Self::KeptValid => 1,
            Self::KeptTrusted => 2,
            Self::ReplacedUntrusted => 3,
            Self::ReplacedPolicy => 4,
            Self::ReplacedInvalid(e) => 5 + e.index(),
        }
    }

    /// Action and reason.
    pub const fn outcome(self) -> Outcome<IdAction> {
        let (action, reason) = match self {
            Self::GeneratedAbsent => (IdAction::Generated, "absent"),
            Self::KeptValid => (IdAction::Kept, "valid"),
            Self::KeptTrusted => (IdAction::Kept, "trusted"),
            Self::ReplacedUntrusted => (IdAction::Replaced, "untrusted"),
            Self::ReplacedPolicy => (IdAction::Replaced, "policy"),
            Self::ReplacedInvalid(e) => (IdAction::Replaced, e.reason()),
        };
        Outcome { action, reason }
    }

    /// Whether the client's id stays on the request.
    pub const fn kept(self) -> bool {
        matches!(self, Self::KeptValid | Self::KeptTrusted)
    }
}

/// What happened to the trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceAction {
    /// A valid incoming context was continued.
    Kept,
    /// There was none; a new trace was started.
    Started,
    /// There was one but it was invalid or not trusted; a new trace was started.
    Restarted,
}

impl TraceAction {
    /// Metric tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Started => "started",
            Self::Restarted => "restarted",
        }
    }
}

/// The trace-context outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceOutcome {
    /// Kept a valid version-00 `traceparent`.
    KeptValid,
    /// Kept a future-version `traceparent` (re-emitted as version 00).
    KeptFutureVersion,
    /// Kept a B3 context (no `traceparent` was sent).
    KeptB3,
    /// Started: nothing was sent.
    StartedAbsent,
    /// Restarted: `restart` mode (a trust boundary).
    RestartedTrustBoundary,
    /// Restarted: the B3 headers were malformed.
    RestartedInvalidB3,
    /// Restarted: the `traceparent` was invalid.
    RestartedInvalid(InvalidTraceParent),
}

impl TraceOutcome {
    /// Number of series.
    pub const COUNT: usize = 6 + InvalidTraceParent::ALL.len();

    /// Every outcome, in series order.
    pub fn all() -> impl Iterator<Item = Self> {
        [
            Self::KeptValid,
            Self::KeptFutureVersion,
            Self::KeptB3,
            Self::StartedAbsent,
            Self::RestartedTrustBoundary,
            Self::RestartedInvalidB3,
        ]
        .into_iter()
        .chain(
            InvalidTraceParent::ALL
                .into_iter()
                .map(Self::RestartedInvalid),
        )
    }

    /// The metric series index.
    pub const fn series(self) -> usize {
        match self {
            Self::KeptValid => 0,
            Self::KeptFutureVersion => 1,
            Self::KeptB3 => 2,
            Self::StartedAbsent => 3,
            Self::RestartedTrustBoundary => 4,
            Self::RestartedInvalidB3 => 5,
            Self::RestartedInvalid(e) => 6 + e.index(),
        }
    }

    /// Action and reason.
    pub const fn outcome(self) -> Outcome<TraceAction> {
        let (action, reason) = match self {
            Self::KeptValid => (TraceAction::Kept, "valid"),
            Self::KeptFutureVersion => (TraceAction::Kept, "future_version"),
            Self::KeptB3 => (TraceAction::Kept, "b3"),
            Self::StartedAbsent => (TraceAction::Started, "absent"),
            Self::RestartedTrustBoundary => (TraceAction::Restarted, "trust_boundary"),
            Self::RestartedInvalidB3 => (TraceAction::Restarted, "invalid_b3"),
            Self::RestartedInvalid(e) => (TraceAction::Restarted, e.reason()),
        };
        Outcome { action, reason }
    }
}

/// What happened to `tracestate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAction {
    /// Forwarded (unchanged in `passthrough`, combined into one header in `hop`).
    Kept,
    /// Entries were removed to fit `maxLength`.
    Truncated,
    /// Removed (invalid, or the trace restarted).
    Dropped,
}

impl StateAction {
    /// Metric tag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Kept => "kept",
            Self::Truncated => "truncated",
            Self::Dropped => "dropped",
        }
    }
}

/// The `tracestate` outcome (only when one was received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOutcome {
    /// Kept: valid (forwarded as one combined header).
    KeptValid,
    /// Kept unchanged (`passthrough`: the parent is unchanged, so must it be).
    KeptUnchanged,
    /// Kept with duplicate keys removed.
    KeptDeduplicated,
    /// Entries removed to fit `maxLength`.
    Truncated,
    /// Dropped: the trace was restarted.
    DroppedRestarted,
    /// Dropped: no valid `traceparent` came with it.
    DroppedNoTraceparent,
    /// Dropped: it was empty (accepted, but not sent on).
    DroppedEmpty,
    /// Dropped: nothing fit `maxLength`.
    DroppedTooLong,
    /// Dropped: it was invalid.
    DroppedInvalid(InvalidTraceState),
}

impl StateOutcome {
    /// Number of series.
    pub const COUNT: usize = 8 + InvalidTraceState::ALL.len();

    /// Every outcome, in series order.
    pub fn all() -> impl Iterator<Item = Self> {
        [
            Self::KeptValid,
            Self::KeptUnchanged,
            Self::KeptDeduplicated,
            Self::Truncated,
            Self::DroppedRestarted,
            Self::DroppedNoTraceparent,
            Self::DroppedEmpty,
            Self::DroppedTooLong,
        ]
        .into_iter()
        .chain(InvalidTraceState::ALL.into_iter().map(Self::DroppedInvalid))
    }

    /// The metric series index.
    pub const fn series(self) -> usize {
        match self {
            Self::KeptValid => 0,
            Self::KeptUnchanged => 1,
            Self::KeptDeduplicated => 2,
            Self::Truncated => 3,
            Self::DroppedRestarted => 4,
            Self::DroppedNoTraceparent => 5,
            Self::DroppedEmpty => 6,
            Self::DroppedTooLong => 7,
            Self::DroppedInvalid(e) => 8 + e.index(),
        }
    }

    /// Action and reason.
    pub const fn outcome(self) -> Outcome<StateAction> {
        let (action, reason) = match self {
            Self::KeptValid => (StateAction::Kept, "valid"),
            Self::KeptUnchanged => (StateAction::Kept, "unchanged"),
            Self::KeptDeduplicated => (StateAction::Kept, "deduplicated"),
            Self::Truncated => (StateAction::Truncated, "too_long"),
            Self::DroppedRestarted => (StateAction::Dropped, "restarted"),
            Self::DroppedNoTraceparent => (StateAction::Dropped, "no_traceparent"),
            Self::DroppedEmpty => (StateAction::Dropped, "empty"),
            Self::DroppedTooLong => (StateAction::Dropped, "too_long"),
            Self::DroppedInvalid(e) => (StateAction::Dropped, e.reason()),
        };
        Outcome { action, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_indices_are_the_positions_in_all() {
        assert!(IdOutcome::all().enumerate().all(|(i, o)| o.series() == i));
        assert_eq!(IdOutcome::all().count(), IdOutcome::COUNT);
        assert!(
            TraceOutcome::all()
                .enumerate()
                .all(|(i, o)| o.series() == i)
        );
        assert_eq!(TraceOutcome::all().count(), TraceOutcome::COUNT);
        assert!(
            StateOutcome::all()
                .enumerate()
                .all(|(i, o)| o.series() == i)
        );
        assert_eq!(StateOutcome::all().count(), StateOutcome::COUNT);
    }

    #[test]
    fn tag_values_are_distinct_within_a_family() {
        fn distinct<A: PartialEq + Copy>(tags: &[Outcome<A>]) -> bool {
            tags.iter().enumerate().all(|(i, a)| {
                tags.iter()
                    .skip(i + 1)
                    .all(|b| a.action != b.action || a.reason != b.reason)
            })
        }
        assert!(distinct(
            &IdOutcome::all().map(IdOutcome::outcome).collect::<Vec<_>>()
        ));
        assert!(distinct(
            &TraceOutcome::all()
                .map(TraceOutcome::outcome)
                .collect::<Vec<_>>()
        ));
        assert!(distinct(
            &StateOutcome::all()
                .map(StateOutcome::outcome)
                .collect::<Vec<_>>()
        ));
    }
}
