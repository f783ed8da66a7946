//! trace-id filter (in progress).
