//! The PostgreSQL schema: the same tables as SQLite, keyed by `account_id`
//! first so they shard by account (docs/scaling.md). Migrations are
//! versioned in `schema_migrations` and applied on start under a
//! transaction-scoped advisory lock, so replicas starting together migrate
//! once.

use tokio_postgres::Client;

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
    monthly_free_credits BIGINT NOT NULL CHECK (monthly_free_credits >= 0),
    unit_price_micros BIGINT NOT NULL CHECK (unit_price_micros >= 0),
    currency TEXT NOT NULL,
    auto_recharge TEXT,
    low_balance_threshold BIGINT NOT NULL,
    monthly_purchase_limit BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    free_month TEXT,
    billed_through TEXT,
    suspended_by TEXT
);
CREATE INDEX accounts_by_creation ON accounts (created_at, account_id);

CREATE TABLE lots (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    lot_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    original BIGINT NOT NULL,
    remaining BIGINT NOT NULL CHECK (remaining >= 0),
    held BIGINT NOT NULL CHECK (held >= 0),
    expires_at BIGINT,
    expired BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    unit_price_micros BIGINT,
    active BOOLEAN NOT NULL,
    PRIMARY KEY (account_id, lot_id)
);
CREATE INDEX lots_active ON lots (account_id) WHERE active;

CREATE TABLE holds (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    hold_id TEXT NOT NULL,
    credits BIGINT NOT NULL,
    captured BIGINT NOT NULL,
    status TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    reference TEXT,
    created_at BIGINT NOT NULL,
    parts TEXT NOT NULL,
    PRIMARY KEY (account_id, hold_id)
);
CREATE INDEX holds_active ON holds (account_id) WHERE status = 'held';

CREATE TABLE debits (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    debit_id TEXT NOT NULL,
    credits BIGINT NOT NULL,
    refunded BIGINT NOT NULL,
    reference TEXT,
    description TEXT,
    created_at BIGINT NOT NULL,
    from_free BIGINT NOT NULL,
    from_grants BIGINT NOT NULL,
    from_paid BIGINT NOT NULL,
    parts TEXT NOT NULL,
    PRIMARY KEY (account_id, debit_id)
);

CREATE TABLE purchases (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    purchase_id TEXT NOT NULL,
    credits BIGINT NOT NULL,
    unit_price_micros BIGINT NOT NULL,
    currency TEXT NOT NULL,
    purchased_at BIGINT NOT NULL,
    month TEXT NOT NULL,
    refunded_credits BIGINT NOT NULL,
    refunded_unbilled_credits BIGINT NOT NULL,
    statement_id TEXT,
    PRIMARY KEY (account_id, purchase_id)
);
CREATE INDEX purchases_by_time ON purchases (account_id, purchased_at);
CREATE INDEX purchases_unbilled ON purchases (account_id)
    WHERE statement_id IS NULL AND credits > refunded_unbilled_credits;

CREATE TABLE purchase_refunds (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    refund_id TEXT NOT NULL,
    purchase_id TEXT NOT NULL,
    credits BIGINT NOT NULL,
    unit_price_micros BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    month TEXT NOT NULL,
    needs_line BOOLEAN NOT NULL,
    statement_id TEXT,
    PRIMARY KEY (account_id, refund_id)
);
CREATE INDEX refunds_pending ON purchase_refunds (account_id) WHERE needs_line AND statement_id IS NULL;

CREATE TABLE statements (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    month TEXT NOT NULL,
    statement_id TEXT NOT NULL,
    issued_on TEXT NOT NULL,
    lines TEXT NOT NULL,
    total_micros BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, month)
);
CREATE INDEX statements_by_month ON statements (month, account_id);

CREATE TABLE entries (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    entry_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    lot_id TEXT NOT NULL,
    delta_credits BIGINT NOT NULL,
    held_delta_credits BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    source TEXT,
    reference TEXT,
    idempotency_key TEXT,
    effective_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, entry_id)
);
-- Entry ids are monotonic per database; per account they also follow the
-- commit order, because an account's writes hold its row lock.
CREATE SEQUENCE entry_ids;

CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    key TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);

CREATE TABLE account_tokens (
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    token_id TEXT NOT NULL,
    label TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, token_id)
);
CREATE UNIQUE INDEX account_tokens_by_secret ON account_tokens (account_id, secret_sha256);
"#,
    r#"
-- The rows every debit appends (its entry, its debit, its key) no longer
-- check their account with a foreign key: each check is a query per row,
-- 60% of an insert's cost. Every write holds the account's row lock, which
-- proves the account exists, accounts are never deleted, and the audit
-- reports any row whose account is missing.
ALTER TABLE entries DROP CONSTRAINT entries_account_id_fkey;
ALTER TABLE debits DROP CONSTRAINT debits_account_id_fkey;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_account_id_fkey;
"#,
    r#"
-- The purchase limit's counter lives on the account row, kept by the
-- domain: the local month of the latest purchase and the net credits
-- bought in it, so a purchase needs no sum over the purchases table.
ALTER TABLE accounts ADD COLUMN purchased_month TEXT;
ALTER TABLE accounts ADD COLUMN purchased_month_credits BIGINT NOT NULL DEFAULT 0;
UPDATE accounts SET purchased_month =
    (SELECT MAX(p.month) FROM purchases p WHERE p.account_id = accounts.account_id);
UPDATE accounts SET purchased_month_credits =
    (SELECT CAST(COALESCE(SUM(p.credits - p.refunded_unbilled_credits), 0) AS BIGINT) FROM purchases p
     WHERE p.account_id = accounts.account_id AND p.month = accounts.purchased_month)
    WHERE purchased_month IS NOT NULL;
CREATE INDEX statements_failed ON statements (account_id) WHERE status = 'failed';
"#,
    r#"
-- When each account token was last used (to the minute), for the list.
ALTER TABLE account_tokens ADD COLUMN last_used_at BIGINT;
"#,
    r#"
-- Usage counters per account and local month, written with the entries
-- (filled from the existing entries by `backfill_usage`).
CREATE TABLE usage_months (
    account_id TEXT NOT NULL,
    month TEXT NOT NULL,
    free_granted BIGINT NOT NULL,
    free_used BIGINT NOT NULL,
    free_expired BIGINT NOT NULL,
    paid_purchased BIGINT NOT NULL,
    paid_used BIGINT NOT NULL,
    paid_refunded BIGINT NOT NULL,
    grants_granted BIGINT NOT NULL,
    grants_used BIGINT NOT NULL,
    grants_expired BIGINT NOT NULL,
    refunded BIGINT NOT NULL,
    PRIMARY KEY (account_id, month)
);
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
ALTER TABLE debits ADD COLUMN balance_after BIGINT NOT NULL DEFAULT 0;
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
    CAST(json_agg(json_build_object('lot_id', e.lot_id, 'credits', -e.held_delta_credits) ORDER BY e.entry_id) AS TEXT),
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
ALTER TABLE accounts ADD COLUMN event_sequence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN notices TEXT NOT NULL DEFAULT '{}';
ALTER TABLE accounts ADD COLUMN reset_announced TEXT;
CREATE INDEX accounts_by_reset ON accounts (reset_announced);
CREATE TABLE events (
    account_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    dispatched BOOLEAN NOT NULL,
    PRIMARY KEY (account_id, sequence)
);
CREATE UNIQUE INDEX events_by_id ON events (event_id);
CREATE INDEX events_undispatched ON events (account_id, sequence) WHERE dispatched = FALSE;
-- Webhook endpoints, and one delivery per event and subscribed endpoint
-- (made by the delivery worker from the events not yet dispatched).
CREATE TABLE webhook_endpoints (
    endpoint_id TEXT NOT NULL PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT,
    events TEXT,
    enabled BOOLEAN NOT NULL,
    secret TEXT NOT NULL,
    old_secret TEXT,
    old_secret_until BIGINT,
    disabled_reason TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE webhook_deliveries (
    endpoint_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT,
    leased_until BIGINT,
    last_attempt_at BIGINT,
    last_response_status BIGINT,
    last_response_body TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, account_id, sequence)
);
CREATE INDEX deliveries_pending ON webhook_deliveries (endpoint_id, account_id, sequence) WHERE status = 'pending';
CREATE UNIQUE INDEX deliveries_by_event ON webhook_deliveries (endpoint_id, event_id);
CREATE INDEX deliveries_by_time ON webhook_deliveries (endpoint_id, created_at);
"#,
    r#"
-- A purchase made by auto-recharge says so.
ALTER TABLE purchases ADD COLUMN automatic BOOLEAN NOT NULL DEFAULT FALSE;
-- Every attempt of a delivery (the newest 50 of each are kept).
CREATE TABLE webhook_attempts (
    endpoint_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    attempted_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    response_status BIGINT,
    response_body TEXT,
    error TEXT,
    PRIMARY KEY (endpoint_id, account_id, sequence, attempt)
);
CREATE INDEX attempts_by_event ON webhook_attempts (endpoint_id, event_id, attempt);
-- The pending deliveries by when they are due: a claim reads the due ones
-- in that order, not every pending one.
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
"#,
    r#"
-- The idempotency keys of the webhook routes (src/store/request_keys.rs):
-- a request's text and its first answer, kept with the change.
CREATE TABLE request_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
"#,
];

/// The migration (1-based) that creates `usage_months`: after it, the
/// counters are computed from the entries already stored.
const USAGE_MIGRATION: usize = 5;

/// Brings the database to the latest version; refuses a newer one.
pub async fn migrate(client: &mut Client) -> Result<Result<(), String>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock(7295317045130812291)", &[]).await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INT NOT NULL PRIMARY KEY)")
        .await?;
    let version: i32 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.get(0);
    let latest = MIGRATIONS.len() as i32;
    if version > latest {
        return Ok(Err(format!(
            "the database has schema version {version}, newer than this binary's {latest}: upgrade textcredits"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).await?;
        if i + 1 == USAGE_MIGRATION
            && let Err(why) = backfill_usage(&tx).await?
        {
            return Ok(Err(why));
        }
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&(i as i32 + 1)]).await?;
    }
    tx.commit().await?;
    Ok(Ok(()))
}

/// Fills `usage_months` from every account's entries (once, at upgrade;
/// as long as the history, account by account).
async fn backfill_usage(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Result<(), String>, tokio_postgres::Error> {
    use crate::store::columns::{self, ENTRIES, USAGE};
    let accounts = tx.query("SELECT account_id, time_zone FROM accounts ORDER BY account_id", &[]).await?;
    let select = tx.prepare(&ENTRIES.select("WHERE account_id = $1 ORDER BY entry_id")).await?;
    let insert = tx.prepare(USAGE.insert()).await?;
    for row in accounts {
        let (id, zone): (String, String) = (row.get(0), row.get(1));
        let (Ok(account), Ok(zone)) = (AccountId::parse(&id), Zone::parse(&zone)) else {
            return Ok(Err(format!("account {id:?} has an unreadable id or time zone")));
        };
        let mut entries = Vec::new();
        for r in tx.query(&select, &[&id]).await? {
            match columns::entry(&r) {
                Ok(e) => entries.push(e),
                Err(why) => return Ok(Err(format!("account {id}: {why}"))),
            }
        }
        for u in usage::by_month(&entries, &zone) {
            let vals = columns::usage_vals(&account, &u);
            tx.execute(&insert, &super::rows::params(&vals)).await?;
        }
    }
    Ok(Ok(()))
}
