//! The one integration-test binary (as ripgrep and cargo do): a module per
//! area, shared fixtures in `util`.

/// Runs every test of the module it is called in once per store: SQLite always, PostgreSQL when
/// `TEXTCREDITS_TEST_PG` is set (each test in a fresh schema).
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::util::Db::new();
                    super::$name(db.ledger().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = crate::util::Db::postgres() else { return };
                    super::$name(db.pg_ledger().await).await;
                }
            )*
        }
    };
}

/// Runs every HTTP test of the module it is called in once per store,
/// through the real server: SQLite always, PostgreSQL when
/// `TEXTCREDITS_TEST_PG` is set.
macro_rules! on_every_store {
    ($(#[$attr:meta] $name:ident),* $(,)?) => {
        mod sqlite {
            use crate::util::Db;
            $(
                #[$attr]
                async fn $name() {
                    super::$name(Db::new()).await;
                }
            )*
        }
        mod postgres {
            use crate::util::Db;
            $(
                #[$attr]
                async fn $name() {
                    let Some(db) = Db::postgres() else { return };
                    super::$name(db).await;
                }
            )*
        }
    };
}

/// The platform engineer's API (issue 12): objects, lists, conventions.
mod api;
/// Auto-recharge (issue 14): once per crossing, caps, suspension, rescue.
mod auto_recharge;
/// `POST /v1/batch` (issue 15): each operation as its own route answers it.
mod batch;
/// The dashboard in headless Chromium, and its headers and CSRF refusals.
mod browser;
/// Bad input and whole flows through the real `textcredits` binary.
mod cli;
/// The OpenAPI contract, checked by schemathesis against the real server.
mod contract;
/// SIGKILL in the middle of writes: nothing acknowledged is lost.
mod crash;
/// Events (issue 14): the outbox, alerts, month closes.
mod events;
/// Operations sent together, grouped by the stores: answers as if one at a time.
mod groups;
/// Hostile and careless clients (issue 11): metrics labels, slow
/// connections, panics, instants out of range.
mod hostile;
/// The HTTP API end to end: the real server over loopback.
mod http;
/// Bad input through HTTP: every field of every POST, bodies of every size.
mod http_input;
/// SQLite's log (issue 15): limits, replay at open, takeover by another process.
mod log;
/// Random operation sequences against a reference model (proptest).
mod props;
/// The README's examples, run as written.
mod readme;
/// Several server replicas on one PostgreSQL database, with faults.
mod replicas;
/// The rules R1-R8, run against every store (the conformance suite).
mod rules;
/// The two stores' schemas, read from their catalogs, are the same.
mod schema;
/// Shared fixtures: databases, the binary, timestamps.
mod util;
/// docs/webhooks.md's Python and Node receivers accept what the server sends.
mod webhook_docs;
/// One webhook delivery attempt against the real test receiver.
mod webhook_parts;
/// A real webhook receiver that verifies signatures on its own (a fixture).
mod webhook_receiver;
/// Webhooks end to end: the delivery worker against a real receiver.
mod webhooks;
