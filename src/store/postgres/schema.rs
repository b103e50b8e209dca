//! The PostgreSQL schema: the same tables as SQLite, keyed by `account_id`
//! first so they shard by account (docs/scaling.md). Migrations are
//! versioned in `schema_migrations` and applied on start under a
//! transaction-scoped advisory lock, so replicas starting together migrate
//! once.

use tokio_postgres::Client;

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
];

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
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&(i as i32 + 1)]).await?;
    }
    tx.commit().await?;
    Ok(Ok(()))
}
