//! envoy.yaml / istio consistency tests (filled in by the packaging work).
