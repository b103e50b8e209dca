//! The store side of the one write pipeline ([`crate::ledger::batch`]),
//! written once for both databases: which queries load a group, their SQL,
//! where each row they return lands, and the rows a group writes, table by
//! table. A store only runs these (sync or async) inside its transaction.
//!
//! Every load takes one parameter, a JSON array of account ids or of
//! `[account, id]` pairs, so a whole group is one query per table. What
//! differs between the databases is only how that array becomes rows
//! (`json_each` or `jsonb_array_elements`), how the join is forced to look
//! rows up by key (SQLite's `CROSS JOIN` keeps the written order; in
//! PostgreSQL a `LATERAL` subquery), booleans, and the lock on accounts.

use std::sync::OnceLock;

use crate::domain::account::Account;
use crate::ledger::StoredAnswer;
use crate::ledger::batch::{KeyRow, Loaded, Pair, Rows, Wants};

use super::columns::{
    self, ACCOUNTS, Cols, DEBITS, ENTRIES, EVENTS, HOLDS, KEYS, LOTS, PURCHASES, REFUNDS, STATEMENTS, Table,
    USAGE, Val, micros,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One query of a group's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    Accounts,
    ActiveLots,
    HeldHolds,
    Holds,
    Debits,
    Purchases,
    UnbilledPurchases,
    PendingRefunds,
    Statements,
    FailedStatements,
    Keys,
    /// The instant of each account's latest entry (time never runs
    /// backwards for an account).
    LatestEntry,
    /// The last round: lots the earlier rounds' rows name.
    Lots,
}

/// A condition on the loaded table `t`.
enum Term {
    /// A boolean column is true.
    Flag(&'static str),
    Sql(&'static str),
}

const ALL: [Load; 13] = [
    Load::Accounts,
    Load::ActiveLots,
    Load::HeldHolds,
    Load::Holds,
    Load::Debits,
    Load::Purchases,
    Load::UnbilledPurchases,
    Load::PendingRefunds,
    Load::Statements,
    Load::FailedStatements,
    Load::Keys,
    Load::LatestEntry,
    Load::Lots,
];

impl Load {
    fn table(self) -> &'static Table {
        match self {
            Load::Accounts => &ACCOUNTS,
            Load::ActiveLots | Load::Lots => &LOTS,
            Load::HeldHolds | Load::Holds => &HOLDS,
            Load::Debits => &DEBITS,
            Load::Purchases | Load::UnbilledPurchases => &PURCHASES,
            Load::PendingRefunds => &REFUNDS,
            Load::Statements | Load::FailedStatements => &STATEMENTS,
            Load::Keys => &KEYS,
            Load::LatestEntry => &ENTRIES,
        }
    }

    /// The id column matched with the second member of a pair; `None` for
    /// loads by account.
    fn pair_column(self) -> Option<&'static str> {
        match self {
            Load::Holds => Some("hold_id"),
            Load::Debits => Some("debit_id"),
            Load::Purchases => Some("purchase_id"),
            Load::Statements => Some("statement_id"),
            Load::Keys => Some("key"),
            Load::Lots => Some("lot_id"),
            _ => None,
        }
    }

    fn terms(self) -> &'static [Term] {
        match self {
            Load::ActiveLots => &[Term::Flag("active")],
            Load::HeldHolds => &[Term::Sql("t.status = 'held'")],
            Load::UnbilledPurchases => {
                &[Term::Sql("t.statement_id IS NULL AND t.credits > t.refunded_unbilled_credits")]
            }
            Load::PendingRefunds => &[Term::Flag("needs_line"), Term::Sql("t.statement_id IS NULL")],
            Load::FailedStatements => &[Term::Sql("t.status = 'failed'")],
            _ => &[],
        }
    }

    /// The partial index that holds exactly the rows this load wants:
    /// SQLite is told to use it (`INDEXED BY`), so the load reads active
    /// rows only, however long the account's history (its planner would
    /// otherwise take the primary key and walk every row of the account).
    fn partial_index(self) -> Option<&'static str> {
        match self {
            Load::ActiveLots => Some("lots_active"),
            Load::HeldHolds => Some("holds_active"),
            Load::UnbilledPurchases => Some("purchases_unbilled"),
            Load::PendingRefunds => Some("refunds_pending"),
            Load::FailedStatements => Some("statements_failed"),
            _ => None,
        }
    }

    /// Puts one returned row where it belongs.
    pub fn land(self, loaded: &mut Loaded, r: &impl Cols) -> Result<(), String> {
        match self {
            Load::Accounts => loaded.accounts.push(columns::account(r)?),
            Load::ActiveLots | Load::Lots => loaded.lots.push((r.text(0)?, columns::lot(r)?)),
            Load::HeldHolds | Load::Holds => loaded.holds.push((r.text(0)?, columns::hold(r)?)),
            Load::Debits => loaded.debits.push((r.text(0)?, columns::debit(r)?)),
            Load::Purchases | Load::UnbilledPurchases => {
                loaded.purchases.push((r.text(0)?, columns::purchase(r)?))
            }
            Load::PendingRefunds => loaded.refunds.push((r.text(0)?, columns::refund(r)?)),
            Load::Statements | Load::FailedStatements => loaded.statements.push(columns::statement(r)?),
            Load::Keys => loaded
                .keys
                .push(((r.text(0)?, r.text(1)?), StoredAnswer { request: r.text(2)?, response: r.text(3)? })),
            Load::LatestEntry => {
                if let Some(at) = r.opt_int(1)? {
                    loaded.latest_entries.push((r.text(0)?, columns::instant(at)?));
                }
            }
        }
        Ok(())
    }
}

fn json_ids(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("strings serialize")
}

fn json_pairs(pairs: &[Pair]) -> String {
    serde_json::to_string(pairs).expect("strings serialize")
}

/// What one load asks for: the accounts, or the (account, id) pairs.
#[derive(Debug, Clone, Copy)]
pub enum Ask<'a> {
    Accounts(&'a [String]),
    Pairs(&'a [Pair]),
}

impl Ask<'_> {
    /// The load's one parameter.
    pub fn json(&self) -> String {
        match self {
            Ask::Accounts(ids) => json_ids(ids),
            Ask::Pairs(pairs) => json_pairs(pairs),
        }
    }
}

/// The first round of a group's load: each query with what it asks for,
/// leaving out those with nothing to ask for. [`Load::Accounts`] comes
/// first (on PostgreSQL it takes the locks).
pub fn asks(w: &Wants) -> Vec<(Load, Ask<'_>)> {
    let by_accounts = [
        (Load::Accounts, &w.accounts),
        (Load::LatestEntry, &w.accounts),
        (Load::ActiveLots, &w.accounts),
        (Load::HeldHolds, &w.accounts),
        (Load::UnbilledPurchases, &w.unbilled),
        (Load::PendingRefunds, &w.unbilled),
        (Load::FailedStatements, &w.failed_statements),
    ];
    let by_pairs = [
        (Load::Holds, &w.holds),
        (Load::Debits, &w.debits),
        (Load::Purchases, &w.purchases),
        (Load::Statements, &w.statements),
        (Load::Keys, &w.keys),
    ];
    let mut out: Vec<(Load, Ask<'_>)> = by_accounts
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(l, v)| (l, Ask::Accounts(v.as_slice())))
        .collect();
    out.extend(
        by_pairs.into_iter().filter(|(_, v)| !v.is_empty()).map(|(l, v)| (l, Ask::Pairs(v.as_slice()))),
    );
    out
}

/// The first round of [`asks`], each with its parameter.
pub fn plan(w: &Wants) -> Vec<(Load, String)> {
    asks(w).into_iter().map(|(l, ask)| (l, ask.json())).collect()
}

/// The second round: the unbilled purchases of the accounts that turned
/// out to auto-recharge, if any.
pub fn plan_recharging(loaded: &Loaded, wants: &Wants) -> Option<(Load, String)> {
    let accounts = loaded.recharging(wants);
    (!accounts.is_empty()).then(|| (Load::UnbilledPurchases, json_ids(&accounts)))
}

/// The last round: the lots the earlier rounds' rows name
/// ([`Loaded::missing_lots`]) and the debits whose answers their keys name
/// ([`Loaded::named_debits`]), leaving out either if there is none.
pub fn last_round(loaded: &Loaded) -> Vec<(Load, Vec<Pair>)> {
    [(Load::Lots, loaded.missing_lots()), (Load::Debits, loaded.named_debits())]
        .into_iter()
        .filter(|(_, pairs)| !pairs.is_empty())
        .collect()
}

/// [`last_round`], each load with its parameter.
pub fn plan_last(loaded: &Loaded) -> Vec<(Load, String)> {
    last_round(loaded).into_iter().map(|(l, pairs)| (l, json_pairs(&pairs))).collect()
}

impl Dialect {
    /// The SQL of `load`. Accounts are locked (`FOR UPDATE`, in id order)
    /// when `lock`; SQLite's writer already holds the database's lock.
    pub fn sql(self, load: Load, lock: bool) -> &'static str {
        static SQL: OnceLock<Vec<String>> = OnceLock::new();
        let all = SQL.get_or_init(|| {
            let mut v = Vec::new();
            for dialect in [Dialect::Sqlite, Dialect::Postgres] {
                for lock in [false, true] {
                    v.extend(ALL.iter().map(|&l| dialect.build(l, lock)));
                }
            }
            v
        });
        let i = ALL.iter().position(|&l| l == load).expect("every load is listed");
        let dialect = if self == Dialect::Sqlite { 0 } else { 2 };
        &all[(dialect + usize::from(lock)) * ALL.len() + i]
    }

    fn build(self, load: Load, lock: bool) -> String {
        let table = load.table();
        let source = match (self, load.pair_column().is_some()) {
            (Dialect::Sqlite, false) => "(SELECT value AS a FROM json_each($1)) AS w",
            (Dialect::Sqlite, true) => "(SELECT value ->> 0 AS a, value ->> 1 AS b FROM json_each($1)) AS w",
            (Dialect::Postgres, false) => "jsonb_array_elements_text($1::text::jsonb) AS w (a)",
            (Dialect::Postgres, true) => {
                "(SELECT v ->> 0 AS a, v ->> 1 AS b FROM jsonb_array_elements($1::text::jsonb) AS v) AS w"
            }
        };
        if load == Load::LatestEntry {
            // The account's last entry by id is its latest (ids follow the
            // account's operations, whose instants never go back).
            return format!(
                "SELECT w.a, (SELECT e.created_at FROM entries AS e WHERE e.account_id = w.a \
                 ORDER BY e.entry_id DESC LIMIT 1) FROM {source}"
            );
        }
        let mut conds = vec!["t.account_id = w.a".to_string()];
        if let Some(col) = load.pair_column() {
            conds.push(format!("t.{col} = w.b"));
        }
        for term in load.terms() {
            conds.push(match (term, self) {
                (Term::Flag(c), Dialect::Sqlite) => format!("t.{c} = 1"),
                (Term::Flag(c), Dialect::Postgres) => format!("t.{c}"),
                (Term::Sql(s), _) => s.to_string(),
            });
        }
        let cols = table.cols.iter().map(|c| format!("t.{c}")).collect::<Vec<_>>().join(", ");
        let name = table.name;
        match self {
            Dialect::Sqlite => {
                let indexed = load.partial_index().map(|i| format!(" INDEXED BY {i}")).unwrap_or_default();
                format!(
                    "SELECT {cols} FROM {source} CROSS JOIN {name} AS t{indexed} WHERE {}",
                    conds.join(" AND ")
                )
            }
            // The subquery is a fence (`OFFSET 0`, or the lock): PostgreSQL
            // cannot flatten it into a join, so each wanted key is one
            // index probe whatever the statistics say. Flattened, a young
            // or not yet analyzed table got a hash join over every row,
            // and the cached plan kept it while the table grew. Accounts
            // are locked row by row in the array's order, which is id
            // order (so two groups never deadlock).
            Dialect::Postgres => {
                let fence = if load == Load::Accounts && lock { "FOR UPDATE" } else { "OFFSET 0" };
                format!(
                    "SELECT {cols} FROM {source} CROSS JOIN LATERAL \
                     (SELECT * FROM {name} AS t WHERE {} {fence}) AS t",
                    conds.join(" AND ")
                )
            }
        }
    }
}

/// The tables a group writes, in this order: each account's entry ids then
/// follow the order of its operations, and a row is written before the
/// rows that name it.
pub const WRITE_ORDER: [&Table; 11] =
    [&ACCOUNTS, &LOTS, &HOLDS, &DEBITS, &PURCHASES, &REFUNDS, &STATEMENTS, &ENTRIES, &EVENTS, &USAGE, &KEYS];

/// Tables whose rows are only ever inserted: the ledger's entries, the
/// outbox's events and the idempotency keys (a second write of one key is
/// an error, never an overwrite).
pub fn append_only(table: &Table) -> bool {
    [&ENTRIES, &EVENTS, &KEYS].into_iter().any(|t| std::ptr::eq(table, t))
}

/// The values of every row of `rows`, per table of [`WRITE_ORDER`] (empty
/// tables left out). Entries are numbered from `first_entry_id` in order
/// (PostgreSQL draws them from its sequence instead and ignores these).
pub fn table_rows(rows: &Rows, first_entry_id: i64) -> Vec<(&'static Table, Vec<Vec<Val>>)> {
    let account = |a: &Account| columns::account_vals(a);
    let per_table: [Vec<Vec<Val>>; 11] = [
        rows.accounts.iter().map(account).collect(),
        rows.lots.iter().map(|(a, l, active)| columns::lot_vals(a, l, *active)).collect(),
        rows.holds.iter().map(|(a, h)| columns::hold_vals(a, h)).collect(),
        rows.debits.iter().map(|(a, d)| columns::debit_vals(a, d)).collect(),
        rows.purchases.iter().map(|(a, p)| columns::purchase_vals(a, p)).collect(),
        rows.refunds.iter().map(|(a, r)| columns::refund_vals(a, r)).collect(),
        rows.statements.iter().map(columns::statement_vals).collect(),
        rows.entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut entry = e.entry.clone();
                entry.id = first_entry_id + i as i64;
                columns::entry_vals(&e.account, &entry, e.key.as_deref())
            })
            .collect(),
        rows.events.iter().map(|(a, e)| columns::event_vals(a, e)).collect(),
        rows.usage.iter().map(|(a, u)| columns::usage_vals(a, u)).collect(),
        rows.keys.iter().map(key_vals).collect(),
    ];
    WRITE_ORDER.into_iter().zip(per_table).filter(|(_, rows)| !rows.is_empty()).collect()
}

/// The values of an idempotency key's row (see [`KEYS`]).
pub fn key_vals(k: &KeyRow) -> Vec<Val> {
    vec![
        k.account.as_str().into(),
        k.key.clone().into(),
        k.answer.request.clone().into(),
        k.answer.response.clone().into(),
        micros(k.at).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_by_pair_join_on_the_key_and_flags_differ_by_dialect() {
        assert_eq!(
            Dialect::Sqlite.sql(Load::PendingRefunds, false),
            "SELECT t.account_id, t.refund_id, t.purchase_id, t.credits, t.unit_price_micros, t.created_at, \
             t.month, t.needs_line, t.statement_id FROM (SELECT value AS a FROM json_each($1)) AS w \
             CROSS JOIN purchase_refunds AS t INDEXED BY refunds_pending WHERE t.account_id = w.a AND t.needs_line = 1 AND \
             t.statement_id IS NULL"
        );
        let pg = Dialect::Postgres.sql(Load::Keys, true);
        assert!(pg.contains("CROSS JOIN LATERAL (SELECT * FROM idempotency_keys AS t WHERE t.account_id = w.a AND t.key = w.b OFFSET 0)"), "{pg}");
        assert!(
            Dialect::Postgres
                .sql(Load::Accounts, true)
                .ends_with("WHERE t.account_id = w.a FOR UPDATE) AS t")
        );
        assert!(!Dialect::Postgres.sql(Load::Accounts, false).contains("FOR UPDATE"));
    }

    #[test]
    fn a_plan_asks_only_for_what_the_group_needs() {
        let w = Wants { accounts: vec!["a".into()], ..Wants::default() };
        let loads: Vec<Load> = plan(&w).into_iter().map(|(l, _)| l).collect();
        assert_eq!(loads, [Load::Accounts, Load::LatestEntry, Load::ActiveLots, Load::HeldHolds]);
        let w = Wants { keys: vec![("a".into(), "k\"1".into())], ..w };
        assert_eq!(plan(&w).last().unwrap(), &(Load::Keys, r#"[["a","k\"1"]]"#.to_string()));
    }
}
