//! The one integration-test binary (as ripgrep and cargo do): a module per
//! area, shared fixtures in `util`.

/// Bad input and whole flows through the real `textcredits` binary.
mod cli;
/// The OpenAPI contract, checked by schemathesis against the real server.
mod contract;
/// SIGKILL in the middle of writes: nothing acknowledged is lost.
mod crash;
/// The HTTP API end to end: the real server over loopback.
mod http;
/// Bad input through HTTP: every field of every POST, bodies of every size.
mod http_input;
/// Random operation sequences against a reference model (proptest).
mod props;
/// Several server replicas on one PostgreSQL database, with faults.
mod replicas;
/// The rules R1-R8, run against every store (the conformance suite).
mod rules;
/// Shared fixtures: databases, the binary, timestamps.
mod util;
