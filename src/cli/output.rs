//! How each answer prints: JSON (`--json`, the API shapes) or for people,
//! with money as `$5.00` and times in UTC.

use serde::Serialize;

use super::table::{Table, fields};
use crate::domain::command::Outcome;
use crate::domain::money::{Currency, Micros};
use crate::domain::view::{
    AccountView, BalanceView, DebitView, EntryView, HoldView, Page, PurchaseView, QuoteView, StatementView,
    UsageView,
};
use crate::ledger::AuditReport;

pub fn json<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("views serialize");
    s.push('\n');
    s
}

fn money(currency: &Currency, amount: impl Into<Micros>) -> String {
    currency.display(amount.into())
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "-".to_string())
}

pub fn outcome(o: &Outcome) -> String {
    match o {
        Outcome::Account(a) => account(a),
        Outcome::Purchase(p) => purchase(p),
        Outcome::PurchaseRefund(r) => fields(&[
            ("refund", r.id.clone()),
            ("purchase", r.purchase_id.clone()),
            ("credits", r.credits.to_string()),
            ("amount", money(&r.currency, r.amount)),
            ("billing", format!("{} ({})", r.billing, r.month)),
            ("available", r.balance_after.to_string()),
        ]),
        Outcome::Debit(d) => debit(d),
        Outcome::DebitRefund(r) => fields(&[
            ("debit", r.debit_id.clone()),
            ("refunded", r.credits.to_string()),
            ("expired again", r.expired_credits.to_string()),
            ("refunded in all", r.refunded_credits.to_string()),
            ("available", r.balance_after.to_string()),
        ]),
        Outcome::Hold(h) => hold(h),
        Outcome::Grant(g) => fields(&[
            ("grant", g.id.clone()),
            ("credits", g.credits.to_string()),
            ("expires", g.expires_at.map_or("never".to_string(), |t| t.to_string())),
            ("reason", g.reason.clone()),
            ("available", g.balance_after.to_string()),
        ]),
        Outcome::Closed(statements) => {
            if statements.is_empty() {
                "no statement to issue: nothing unbilled in the months closed\n".to_string()
            } else {
                statement_list(statements)
            }
        }
        Outcome::Statement(s) => statement(s),
    }
}

pub fn account(a: &AccountView) -> String {
    let mut out = fields(&[
        ("account", a.id.clone()),
        ("name", a.name.clone()),
        ("time zone", a.time_zone.clone()),
        ("free credits/month", a.monthly_free_credits.to_string()),
        ("unit price", money(&a.currency, a.unit_price)),
        ("currency", a.currency.to_string()),
        ("low balance alert", a.low_balance_threshold.to_string()),
        ("purchase limit/month", a.monthly_purchase_limit.to_string()),
        (
            "auto-recharge",
            a.auto_recharge.as_ref().map_or("off".to_string(), |r| {
                format!("buy {} below {} (cap {}/month)", r.credits, r.threshold, r.monthly_cap)
            }),
        ),
        (
            "purchases",
            a.purchases_suspended_by.as_ref().map_or("allowed".into(), |s| format!("suspended by {s}")),
        ),
        ("status", a.status.to_string()),
        ("created", a.created_at.to_string()),
    ]);
    if let Some(b) = &a.balance {
        out.push('\n');
        out.push_str(&balance(b));
    }
    out
}

pub fn account_list(page: &Page<AccountView>) -> String {
    let mut t = Table::new(&["account", "name", "time zone", ">free/month", ">unit price", "created"]);
    for a in &page.data {
        t.row(vec![
            a.id.clone(),
            a.name.clone(),
            a.time_zone.clone(),
            a.monthly_free_credits.to_string(),
            money(&a.currency, a.unit_price),
            a.created_at.to_string(),
        ]);
    }
    with_cursor(t.render(), &page.next_cursor)
}

/// A token just created: its id, and the token itself, shown this once.
pub fn new_token(t: &crate::ledger::CreatedToken) -> String {
    format!("token id  {}\ntoken     {}\n(shown once: only its hash is kept)\n", t.id, t.token)
}

pub fn token_list(tokens: &[crate::ledger::TokenInfo]) -> String {
    let mut t = Table::new(&["token", "label", "created", "last used"]);
    for k in tokens {
        let used = k.last_used_at.map_or("never".to_string(), |at| at.to_string());
        t.row(vec![k.id.clone(), k.label.clone(), k.created_at.to_string(), used]);
    }
    t.render()
}

fn with_cursor(mut out: String, next: &Option<String>) -> String {
    if let Some(c) = next {
        out.push_str(&format!("more: --cursor {c}\n"));
    }
    out
}

pub fn balance(b: &BalanceView) -> String {
    let u = &b.unbilled;
    fields(&[
        ("account", b.account_id.clone()),
        ("as of", b.as_of.to_string()),
        ("free allowance", b.free.allowance.to_string()),
        ("free used", b.free.used.to_string()),
        ("free remaining", b.free.remaining.to_string()),
        ("free resets at", b.free.resets_at.to_string()),
        ("paid remaining", b.paid.remaining.to_string()),
        ("grants remaining", b.grants.remaining.to_string()),
        ("held", b.held.to_string()),
        ("available", b.available.to_string()),
        ("unbilled", format!("{} credits, {} on {}", u.credits, money(&u.currency, u.amount), u.bills_on)),
    ])
}

pub fn quote(q: &QuoteView) -> String {
    fields(&[
        ("credits", q.credits.to_string()),
        ("available", q.available.to_string()),
        ("covered", if q.covered { "yes" } else { "no" }.to_string()),
        ("from free", q.from_free.to_string()),
        ("from grants", q.from_grants.to_string()),
        ("from paid", q.from_paid.to_string()),
        ("shortfall", q.shortfall.to_string()),
        ("to buy it", money(&q.currency, q.shortfall_amount)),
    ])
}

pub fn purchase(p: &PurchaseView) -> String {
    fields(&[
        ("purchase", p.id.clone()),
        ("credits", p.credits.to_string()),
        ("unit price", money(&p.currency, p.unit_price)),
        ("amount", money(&p.currency, p.amount)),
        ("purchased", p.purchased_at.to_string()),
        ("bills on", p.bills_on.to_string()),
        ("status", p.status.to_string()),
        ("bought by", if p.automatic { "auto-recharge" } else { "request" }.to_string()),
    ])
}

pub fn debit(d: &DebitView) -> String {
    fields(&[
        ("debit", d.id.clone()),
        ("credits", d.credits.to_string()),
        ("from free", d.from_free.to_string()),
        ("from grants", d.from_grants.to_string()),
        ("from paid", d.from_paid.to_string()),
        ("refunded", d.refunded_credits.to_string()),
        ("reference", opt(&d.reference)),
        ("hold", opt(&d.hold_id)),
        ("available", d.balance_after.to_string()),
    ])
}

pub fn debit_list(page: &Page<DebitView>) -> String {
    let mut t = Table::new(&["created", "debit", ">credits", ">refunded", "reference", "hold", ">available"]);
    for d in &page.data {
        t.row(vec![
            d.created_at.to_string(),
            d.id.clone(),
            d.credits.to_string(),
            d.refunded_credits.to_string(),
            opt(&d.reference),
            opt(&d.hold_id),
            d.balance_after.to_string(),
        ]);
    }
    with_cursor(t.render(), &page.next_cursor)
}

pub fn hold_list(page: &Page<HoldView>) -> String {
    let mut t =
        Table::new(&["created", "hold", ">credits", ">captured", "status", "expires", "reference", "debit"]);
    for h in &page.data {
        t.row(vec![
            h.created_at.to_string(),
            h.id.clone(),
            h.credits.to_string(),
            h.captured.to_string(),
            h.status.as_str().to_string(),
            h.expires_at.to_string(),
            opt(&h.reference),
            opt(&h.debit_id),
        ]);
    }
    with_cursor(t.render(), &page.next_cursor)
}

pub fn purchase_list(page: &Page<PurchaseView>) -> String {
    let mut t = Table::new(&[
        "purchased",
        "purchase",
        ">credits",
        ">unit price",
        ">amount",
        "status",
        "bills on",
        ">refunded",
        "by",
    ]);
    for p in &page.data {
        t.row(vec![
            p.purchased_at.to_string(),
            p.id.clone(),
            p.credits.to_string(),
            money(&p.currency, p.unit_price),
            money(&p.currency, p.amount),
            p.status.to_string(),
            p.bills_on.to_string(),
            p.refunded_credits.to_string(),
            if p.automatic { "auto" } else { "request" }.to_string(),
        ]);
    }
    with_cursor(t.render(), &page.next_cursor)
}

pub fn hold(h: &HoldView) -> String {
    fields(&[
        ("hold", h.id.clone()),
        ("credits", h.credits.to_string()),
        ("captured", h.captured.to_string()),
        ("status", h.status.as_str().to_string()),
        ("expires", h.expires_at.to_string()),
        ("reference", opt(&h.reference)),
        ("debit", opt(&h.debit_id)),
    ])
}

pub fn entry_list(page: &Page<EntryView>) -> String {
    let mut t = Table::new(&[
        ">id",
        "effective",
        "kind",
        "lot",
        ">credits",
        ">held",
        ">balance",
        "source",
        "reference",
    ]);
    for e in &page.data {
        t.row(vec![
            e.id.to_string(),
            e.effective_at.to_string(),
            e.kind.to_string(),
            e.lot_id.clone(),
            format!("{:+}", e.credits),
            format!("{:+}", e.held_credits),
            e.balance_after.to_string(),
            opt(&e.source),
            opt(&e.reference),
        ]);
    }
    with_cursor(t.render(), &page.next_cursor)
}

pub fn usage(rows: &[UsageView]) -> String {
    let mut t = Table::new(&[
        "month",
        ">free granted",
        ">free used",
        ">free expired",
        ">purchased",
        ">paid used",
        ">grants",
        ">grants used",
        ">refunded",
    ]);
    for u in rows {
        t.row(vec![
            u.month.to_string(),
            u.free_granted.to_string(),
            u.free_used.to_string(),
            u.free_expired.to_string(),
            u.paid_purchased.to_string(),
            u.paid_used.to_string(),
            u.grants_granted.to_string(),
            u.grants_used.to_string(),
            u.refunded.to_string(),
        ]);
    }
    t.render()
}

pub fn statement(s: &StatementView) -> String {
    let mut out = fields(&[
        ("statement", s.id.clone()),
        ("account", s.account_id.clone()),
        ("month", s.month.to_string()),
        ("issued on", s.issued_on.to_string()),
        ("status", s.status.to_string()),
        ("total", money(&s.currency, s.total)),
    ]);
    let mut t = Table::new(&["purchase", ">credits", ">unit price", ">amount"]);
    for l in &s.lines {
        t.row(vec![
            l.purchase_id.clone(),
            l.credits.to_string(),
            money(&s.currency, l.unit_price),
            money(&s.currency, l.amount),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    out
}

pub fn statement_list(statements: &[StatementView]) -> String {
    let mut t = Table::new(&["statement", "account", "month", "issued on", ">lines", ">total", "status"]);
    for s in statements {
        t.row(vec![
            s.id.clone(),
            s.account_id.clone(),
            s.month.to_string(),
            s.issued_on.to_string(),
            s.lines.len().to_string(),
            money(&s.currency, s.total),
            s.status.to_string(),
        ]);
    }
    t.render()
}

pub fn statement_page(page: &Page<StatementView>) -> String {
    with_cursor(statement_list(&page.data), &page.next_cursor)
}

pub fn audit(r: &AuditReport) -> String {
    let mut out = fields(&[
        ("accounts", r.accounts.to_string()),
        ("entries replayed", r.entries.to_string()),
        ("lots", r.lots.to_string()),
        ("holds", r.holds.to_string()),
        ("debits", r.debits.to_string()),
        ("purchases", r.purchases.to_string()),
        ("statements", r.statements.to_string()),
        ("mismatches", r.mismatch_count.to_string()),
    ]);
    for m in &r.mismatches {
        out.push_str(&format!("mismatch: {m}\n"));
    }
    out.push_str(if r.ok() { "audit passed\n" } else { "audit FAILED\n" });
    out
}

pub fn bench(r: &crate::bench::Report) -> String {
    let m = &r.machine;
    let mut out = format!(
        "machine: {} cpus, {}, {:.1} GiB, {}\n\n",
        m.cpus,
        m.cpu_model,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        m.os
    );
    let mut t = Table::new(&[
        "scenario",
        "store",
        ">ops",
        ">seconds",
        ">ops/s",
        ">p50 us",
        ">p99 us",
        ">p999 us",
        ">rows/op",
        ">peak rss MiB",
    ]);
    for x in &r.results {
        t.row(vec![
            x.scenario.clone(),
            x.store.clone(),
            x.ops.to_string(),
            format!("{:.2}", x.seconds),
            format!("{:.0}", x.ops_per_sec),
            x.p50_us.to_string(),
            x.p99_us.to_string(),
            x.p999_us.to_string(),
            format!("{:.2}", x.rows_per_op),
            format!("{:.0}", x.peak_rss_bytes as f64 / (1u64 << 20) as f64),
        ]);
    }
    out.push_str(&t.render());
    out
}
