//! The SQLite schema and its versioned migrations, applied on open inside
//! one `BEGIN IMMEDIATE` transaction, so two processes opening the same new
//! file cannot both migrate it. `PRAGMA user_version` is the version.
//!
//! Every table's key starts with `account_id` (DESIGN.md §3), the same
//! layout the PostgreSQL store shards on. Tables are `WITHOUT ROWID` so the
//! key is the storage order: an account's rows sit together.
//! Timestamps are integer microseconds since the Unix epoch, UTC.

use rusqlite::Connection;

use crate::domain::account::AccountId;
use crate::domain::period::Zone;
use crate::domain::usage;

/// Each migration moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    account_id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    monthly_free_credits INTEGER NOT NULL CHECK (monthly_free_credits >= 0),
    unit_price_micros INTEGER NOT NULL CHECK (unit_price_micros >= 0),
    currency TEXT NOT NULL,
    auto_recharge TEXT,
    low_balance_threshold INTEGER NOT NULL,
    monthly_purchase_limit INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    free_month TEXT,
    billed_through TEXT,
    suspended_by TEXT
) WITHOUT ROWID;
CREATE INDEX accounts_by_creation ON accounts (created_at, account_id);

CREATE TABLE lots (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    lot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    original INTEGER NOT NULL,
    remaining INTEGER NOT NULL CHECK (remaining >= 0),
    held INTEGER NOT NULL CHECK (held >= 0),
    expires_at INTEGER,
    expired INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    unit_price_micros INTEGER,
    active INTEGER NOT NULL,
    PRIMARY KEY (account_id, lot_id)
) WITHOUT ROWID;
CREATE INDEX lots_active ON lots (account_id) WHERE active = 1;

CREATE TABLE holds (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    hold_id TEXT NOT NULL,
    credits INTEGER NOT NULL,
    captured INTEGER NOT NULL,
    status TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    reference TEXT,
    created_at INTEGER NOT NULL,
    parts TEXT NOT NULL,
    PRIMARY KEY (account_id, hold_id)
) WITHOUT ROWID;
CREATE INDEX holds_active ON holds (account_id) WHERE status = 'held';

CREATE TABLE debits (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    debit_id TEXT NOT NULL,
    credits INTEGER NOT NULL,
    refunded INTEGER NOT NULL,
    reference TEXT,
    description TEXT,
    created_at INTEGER NOT NULL,
    from_free INTEGER NOT NULL,
    from_grants INTEGER NOT NULL,
    from_paid INTEGER NOT NULL,
    parts TEXT NOT NULL,
    PRIMARY KEY (account_id, debit_id)
) WITHOUT ROWID;

CREATE TABLE purchases (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    purchase_id TEXT NOT NULL,
    credits INTEGER NOT NULL,
    unit_price_micros INTEGER NOT NULL,
    currency TEXT NOT NULL,
    purchased_at INTEGER NOT NULL,
    month TEXT NOT NULL,
    refunded_credits INTEGER NOT NULL,
    refunded_unbilled_credits INTEGER NOT NULL,
    statement_id TEXT,
    PRIMARY KEY (account_id, purchase_id)
) WITHOUT ROWID;
CREATE INDEX purchases_by_time ON purchases (account_id, purchased_at);
CREATE INDEX purchases_unbilled ON purchases (account_id)
    WHERE statement_id IS NULL AND credits > refunded_unbilled_credits;

CREATE TABLE purchase_refunds (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    refund_id TEXT NOT NULL,
    purchase_id TEXT NOT NULL,
    credits INTEGER NOT NULL,
    unit_price_micros INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    month TEXT NOT NULL,
    needs_line INTEGER NOT NULL,
    statement_id TEXT,
    PRIMARY KEY (account_id, refund_id)
) WITHOUT ROWID;
CREATE INDEX refunds_pending ON purchase_refunds (account_id)
    WHERE needs_line = 1 AND statement_id IS NULL;

CREATE TABLE statements (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    month TEXT NOT NULL,
    statement_id TEXT NOT NULL,
    issued_on TEXT NOT NULL,
    lines TEXT NOT NULL,
    total_micros INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, month)
) WITHOUT ROWID;
CREATE INDEX statements_by_month ON statements (month, account_id);
CREATE INDEX statements_failed ON statements (account_id) WHERE status = 'failed';

CREATE TABLE entries (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    entry_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    lot_id TEXT NOT NULL,
    delta_credits INTEGER NOT NULL,
    held_delta_credits INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    source TEXT,
    reference TEXT,
    idempotency_key TEXT,
    effective_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, entry_id)
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    key TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, key)
) WITHOUT ROWID;

-- The one global row: the last entry id handed out (ids are monotonic per
-- database; SQLite has one writer at a time, so this row never contends).
CREATE TABLE sequences (
    name TEXT NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO sequences (name, value) VALUES ('entry', 0);
"#,
    r#"
-- Account tokens for the HTTP API: only a SHA-256 of the secret is kept.
CREATE TABLE account_tokens (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    token_id TEXT NOT NULL,
    label TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, token_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX account_tokens_by_secret ON account_tokens (account_id, secret_sha256);
"#,
    r#"
-- The purchase limit's counter lives on the account row, kept by the
-- domain: the local month of the latest purchase and the net credits
-- bought in it, so a purchase needs no sum over the purchases table.
ALTER TABLE accounts ADD COLUMN purchased_month TEXT;
ALTER TABLE accounts ADD COLUMN purchased_month_credits INTEGER NOT NULL DEFAULT 0;
UPDATE accounts SET purchased_month =
    (SELECT MAX(p.month) FROM purchases p WHERE p.account_id = accounts.account_id);
UPDATE accounts SET purchased_month_credits =
    (SELECT CAST(COALESCE(SUM(p.credits - p.refunded_unbilled_credits), 0) AS BIGINT) FROM purchases p
     WHERE p.account_id = accounts.account_id AND p.month = accounts.purchased_month)
    WHERE purchased_month IS NOT NULL;
"#,
    r#"
-- As PostgreSQL's migration 2 did: the rows every debit appends (its
-- entry, its debit, its key) carry no foreign key; the writer holds the
-- database's lock, accounts are never deleted, and the audit reports any
-- row whose account is missing. SQLite cannot drop a constraint, so the
-- three tables are rebuilt.
CREATE TABLE debits_rebuilt (
    account_id TEXT NOT NULL,
    debit_id TEXT NOT NULL,
    credits INTEGER NOT NULL,
    refunded INTEGER NOT NULL,
    reference TEXT,
    description TEXT,
    created_at INTEGER NOT NULL,
    from_free INTEGER NOT NULL,
    from_grants INTEGER NOT NULL,
    from_paid INTEGER NOT NULL,
    parts TEXT NOT NULL,
    PRIMARY KEY (account_id, debit_id)
) WITHOUT ROWID;
INSERT INTO debits_rebuilt SELECT * FROM debits;
DROP TABLE debits;
ALTER TABLE debits_rebuilt RENAME TO debits;

CREATE TABLE entries_rebuilt (
    account_id TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    lot_id TEXT NOT NULL,
    delta_credits INTEGER NOT NULL,
    held_delta_credits INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    source TEXT,
    reference TEXT,
    idempotency_key TEXT,
    effective_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, entry_id)
) WITHOUT ROWID;
INSERT INTO entries_rebuilt SELECT * FROM entries;
DROP TABLE entries;
ALTER TABLE entries_rebuilt RENAME TO entries;

CREATE TABLE idempotency_keys_rebuilt (
    account_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, key)
) WITHOUT ROWID;
INSERT INTO idempotency_keys_rebuilt SELECT * FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_rebuilt RENAME TO idempotency_keys;
"#,
    r#"
-- When each account token was last used (to the minute), for the list.
ALTER TABLE account_tokens ADD COLUMN last_used_at INTEGER;
"#,
    r#"
-- Usage counters per account and local month, written with the entries
-- (filled from the existing entries by `backfill_usage`).
CREATE TABLE usage_months (
    account_id TEXT NOT NULL,
    month TEXT NOT NULL,
    free_granted INTEGER NOT NULL,
    free_used INTEGER NOT NULL,
    free_expired INTEGER NOT NULL,
    paid_purchased INTEGER NOT NULL,
    paid_used INTEGER NOT NULL,
    paid_refunded INTEGER NOT NULL,
    grants_granted INTEGER NOT NULL,
    grants_used INTEGER NOT NULL,
    grants_expired INTEGER NOT NULL,
    refunded INTEGER NOT NULL,
    PRIMARY KEY (account_id, month)
) WITHOUT ROWID;
"#,
    r#"
-- An account may be closed (no purchases, debits or holds) and reopened.
ALTER TABLE accounts ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
"#,
    r#"
-- A capture is a debit: the debit names its hold, the hold its debit, and
-- a debit keeps the credits available right after it. Existing debits take
-- that from their last entry; existing captures become debits
-- `deb_<hold id>` built from their capture entries, so their undelivered
-- messages can be refunded too.
ALTER TABLE holds ADD COLUMN debit_id TEXT;
ALTER TABLE debits ADD COLUMN hold_id TEXT;
ALTER TABLE debits ADD COLUMN balance_after INTEGER NOT NULL DEFAULT 0;
UPDATE debits SET balance_after = COALESCE((SELECT e.balance_after FROM entries e
    WHERE e.account_id = debits.account_id AND e.source = debits.debit_id AND e.kind = 'debit'
    ORDER BY e.entry_id DESC LIMIT 1), 0);
INSERT INTO debits (account_id, debit_id, credits, refunded, reference, description, created_at,
    from_free, from_grants, from_paid, parts, hold_id, balance_after)
SELECT h.account_id, 'deb_' || h.hold_id, h.captured, 0, h.reference, NULL, MAX(e.effective_at),
    SUM(CASE WHEN e.lot_id LIKE 'free!_%' ESCAPE '!' THEN -e.held_delta_credits ELSE 0 END),
    SUM(CASE WHEN e.lot_id LIKE 'grt!_%' ESCAPE '!' THEN -e.held_delta_credits ELSE 0 END),
    SUM(CASE WHEN e.lot_id LIKE 'free!_%' ESCAPE '!' OR e.lot_id LIKE 'grt!_%' ESCAPE '!' THEN 0
        ELSE -e.held_delta_credits END),
    json_group_array(json_object('lot_id', e.lot_id, 'credits', -e.held_delta_credits) ORDER BY e.entry_id),
    h.hold_id,
    (SELECT l.balance_after FROM entries l WHERE l.account_id = h.account_id AND l.source = h.hold_id
        ORDER BY l.entry_id DESC LIMIT 1)
FROM holds h JOIN entries e ON e.account_id = h.account_id AND e.source = h.hold_id AND e.kind = 'capture'
WHERE h.status = 'captured' AND h.captured > 0
GROUP BY h.account_id, h.hold_id, h.captured, h.reference;
UPDATE holds SET debit_id = 'deb_' || hold_id WHERE status = 'captured' AND captured > 0;
CREATE INDEX debits_by_time ON debits (account_id, created_at);
CREATE INDEX debits_by_reference ON debits (account_id, reference, created_at) WHERE reference IS NOT NULL;
CREATE INDEX holds_by_time ON holds (account_id, created_at);
"#,
    r#"
-- The outbox: every event of an account, numbered by `sequence`, written
-- in the transaction of the change; the account keeps its last number and
-- the alerts it has sent.
ALTER TABLE accounts ADD COLUMN event_sequence INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN notices TEXT NOT NULL DEFAULT '{}';
ALTER TABLE accounts ADD COLUMN reset_announced TEXT;
CREATE INDEX accounts_by_reset ON accounts (reset_announced);
CREATE TABLE events (
    account_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    data TEXT NOT NULL,
    dispatched INTEGER NOT NULL,
    PRIMARY KEY (account_id, sequence)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_by_id ON events (event_id);
CREATE INDEX events_undispatched ON events (account_id, sequence) WHERE dispatched = FALSE;
-- Webhook endpoints, and one delivery per event and subscribed endpoint
-- (made by the delivery worker from the events not yet dispatched).
CREATE TABLE webhook_endpoints (
    endpoint_id TEXT NOT NULL PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT,
    events TEXT,
    enabled INTEGER NOT NULL,
    secret TEXT NOT NULL,
    old_secret TEXT,
    old_secret_until INTEGER,
    disabled_reason TEXT,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER,
    leased_until INTEGER,
    last_attempt_at INTEGER,
    last_response_status INTEGER,
    last_response_body TEXT,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, account_id, sequence)
) WITHOUT ROWID;
CREATE INDEX deliveries_pending ON webhook_deliveries (endpoint_id, account_id, sequence) WHERE status = 'pending';
CREATE UNIQUE INDEX deliveries_by_event ON webhook_deliveries (endpoint_id, event_id);
CREATE INDEX deliveries_by_time ON webhook_deliveries (endpoint_id, created_at);
"#,
    r#"
-- A purchase made by auto-recharge says so.
ALTER TABLE purchases ADD COLUMN automatic INTEGER NOT NULL DEFAULT FALSE;
-- Every attempt of a delivery (the newest 50 of each are kept).
CREATE TABLE webhook_attempts (
    endpoint_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    attempted_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    response_status INTEGER,
    response_body TEXT,
    error TEXT,
    PRIMARY KEY (endpoint_id, account_id, sequence, attempt)
) WITHOUT ROWID;
CREATE INDEX attempts_by_event ON webhook_attempts (endpoint_id, event_id, attempt);
-- The pending deliveries by when they are due: a claim reads the due ones
-- in that order, not every pending one.
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
"#,
    r#"
-- The log (src/store/sqlite/log.rs): each committed group's rows, in
-- order, until they are materialized into the tables above; the state
-- row holds the last materialized position and the writer that owns it.
-- (Written to run again harmlessly over a log that exists.)
CREATE TABLE IF NOT EXISTS ledger_log (
    position INTEGER PRIMARY KEY,
    rows BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_log_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    materialized INTEGER NOT NULL,
    owner TEXT NOT NULL
);
INSERT OR IGNORE INTO ledger_log_state (id, materialized, owner) VALUES (1, 0, '');
"#,
    r#"
-- The idempotency keys of the webhook routes (src/store/request_keys.rs):
-- a request's text and its first answer, kept with the change.
CREATE TABLE request_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
"#,
];

/// The migration (1-based) that creates `usage_months`: after it, the
/// counters are computed from the entries already stored.
const USAGE_MIGRATION: usize = 6;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`]; refuses a newer one.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<(), String>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Err(format!(
            "the database has schema version {version}, newer than this binary's {SCHEMA_VERSION}: upgrade textcredits"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        if i + 1 == USAGE_MIGRATION
            && let Err(why) = backfill_usage(&tx)?
        {
            return Ok(Err(why));
        }
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(Ok(()))
}

/// Fills `usage_months` from every account's entries (once, at upgrade;
/// as long as the history, account by account).
fn backfill_usage(tx: &Connection) -> rusqlite::Result<Result<(), String>> {
    use crate::store::columns::{self, ENTRIES, USAGE};
    let accounts: Vec<(String, String)> =
        super::rows::all(tx, "SELECT account_id, time_zone FROM accounts ORDER BY account_id", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let select = ENTRIES.select("WHERE account_id = $1 ORDER BY entry_id");
    let mut insert = tx.prepare(USAGE.insert())?;
    for (id, zone) in accounts {
        let (Ok(account), Ok(zone)) = (AccountId::parse(&id), Zone::parse(&zone)) else {
            return Ok(Err(format!("account {id:?} has an unreadable id or time zone")));
        };
        let entries = super::rows::all(tx, &select, [&id], super::rows::entry)?;
        for u in usage::by_month(&entries, &zone) {
            insert.execute(rusqlite::params_from_iter(columns::usage_vals(&account, &u)))?;
        }
    }
    Ok(Ok(()))
}
