//! No-op filter (in progress).
