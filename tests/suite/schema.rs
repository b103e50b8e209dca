//! The SQLite and PostgreSQL schemas cannot drift: both are migrated from
//! scratch and read back from the databases' own catalogs (tables, columns
//! with their kind and nullability, primary keys, foreign keys, indexes with
//! their columns, uniqueness and whether they are partial, and the number of
//! CHECK constraints), and the two descriptions must be equal.
//!
//! What may differ, by design: SQLite keeps the entry id counter in a
//! `sequences` table where PostgreSQL has a sequence, and PostgreSQL keeps
//! its applied migrations in `schema_migrations` (SQLite: `user_version`).
//! Types compare by kind: integers (and PostgreSQL's booleans, stored as
//! integers in SQLite) or text.

use std::collections::BTreeMap;

use crate::util::Db;

#[derive(Debug, Default, PartialEq, Eq)]
struct TableShape {
    /// In order: name, kind, NOT NULL.
    columns: Vec<(String, &'static str, bool)>,
    primary_key: Vec<String>,
    /// Column and the table it references.
    foreign_keys: Vec<(String, String)>,
    /// By name: columns, unique, partial.
    indexes: BTreeMap<String, (Vec<String>, bool, bool)>,
    checks: usize,
}

type Shape = BTreeMap<String, TableShape>;

fn kind(sql_type: &str) -> &'static str {
    match sql_type.to_ascii_lowercase().as_str() {
        "integer" | "bigint" | "int" | "boolean" => "int",
        "text" => "text",
        other => panic!("a column type the stores do not use: {other}"),
    }
}

fn sqlite_shape(path: &std::path::Path) -> Shape {
    let conn = rusqlite::Connection::open(path).expect("open");
    let q = |sql: &str, p: &str| -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = conn.prepare(sql).expect(sql);
        let n = stmt.column_count();
        let rows = stmt
            .query_map([p], |r| (0..n).map(|i| r.get::<_, rusqlite::types::Value>(i)).collect())
            .expect(sql);
        rows.map(|r| r.expect("row")).collect()
    };
    let text = |v: &rusqlite::types::Value| match v {
        rusqlite::types::Value::Text(s) => s.clone(),
        other => panic!("not text: {other:?}"),
    };
    let int = |v: &rusqlite::types::Value| match v {
        rusqlite::types::Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    };
    let mut shape = Shape::new();
    let tables = q(
        // The log is SQLite's alone (src/store/sqlite/log.rs): PostgreSQL
        // writes the tables in each group's transaction.
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> 'sequences' AND name NOT LIKE 'ledger_log%' AND name <> ?1",
        "",
    );
    for t in tables {
        let name = text(&t[0]);
        let mut s = TableShape { checks: text(&t[1]).matches("CHECK (").count(), ..TableShape::default() };
        let mut pk: Vec<(i64, String)> = Vec::new();
        for c in q("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid", &name) {
            s.columns.push((text(&c[0]), kind(&text(&c[1])), int(&c[2]) == 1));
            if int(&c[3]) > 0 {
                pk.push((int(&c[3]), text(&c[0])));
            }
        }
        pk.sort();
        s.primary_key = pk.into_iter().map(|(_, c)| c).collect();
        for f in q("SELECT \"from\", \"table\" FROM pragma_foreign_key_list(?1)", &name) {
            s.foreign_keys.push((text(&f[0]), text(&f[1])));
        }
        s.foreign_keys.sort();
        for i in q("SELECT name, \"unique\", partial FROM pragma_index_list(?1) WHERE origin = 'c'", &name) {
            let index = text(&i[0]);
            let cols = q("SELECT name FROM pragma_index_info(?1) ORDER BY seqno", &index);
            let cols = cols.iter().map(|c| text(&c[0])).collect();
            s.indexes.insert(index, (cols, int(&i[1]) == 1, int(&i[2]) == 1));
        }
        shape.insert(name, s);
    }
    shape
}

async fn postgres_shape(url: &str, schema: &str) -> Shape {
    let (client, conn) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("PostgreSQL answers");
    tokio::spawn(conn);
    let rows = |sql: &'static str| {
        let client = &client;
        async move { client.query(sql, &[&schema]).await.unwrap_or_else(|e| panic!("{sql}: {e}")) }
    };
    let mut shape = Shape::new();
    let columns = rows(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable = 'NO' \
         FROM information_schema.columns WHERE table_schema = $1 AND table_name <> 'schema_migrations' \
         ORDER BY table_name, ordinal_position",
    )
    .await;
    for r in columns {
        let t: String = r.get(0);
        let ty: String = r.get(2);
        shape.entry(t).or_default().columns.push((r.get(1), kind(&ty), r.get(3)));
    }
    let keys = rows(
        "SELECT c.relname::text, a.attname::text, k.contype::text, f.relname::text \
         FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_class f ON f.oid = k.confrelid \
         CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u (attnum, pos) \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum \
         WHERE n.nspname = $1 AND k.contype IN ('p', 'f', 'c') ORDER BY c.relname, k.conname, u.pos",
    )
    .await;
    let mut checks: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for r in keys {
        let t: String = r.get(0);
        let col: String = r.get(1);
        let Some(s) = shape.get_mut(&t) else { continue };
        match r.get::<_, String>(2).as_str() {
            "p" => s.primary_key.push(col),
            "f" => s.foreign_keys.push((col, r.get(3))),
            _ => {
                checks.entry(t).or_default().insert(col);
            }
        }
    }
    for (t, cols) in checks {
        shape.get_mut(&t).expect("a known table").checks = cols.len();
    }
    let indexes = rows(
        "SELECT t.relname::text, i.relname::text, x.indisunique, x.indpred IS NOT NULL, \
         array_agg(a.attname::text ORDER BY u.pos) \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS u (attnum, pos) \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = u.attnum \
         WHERE n.nspname = $1 AND NOT x.indisprimary AND t.relname <> 'schema_migrations' \
         GROUP BY t.relname, i.relname, x.indisunique, x.indpred",
    )
    .await;
    for r in indexes {
        let t: String = r.get(0);
        let s = shape.get_mut(&t).expect("a known table");
        s.indexes.insert(r.get(1), (r.get(4), r.get(2), r.get(3)));
    }
    for s in shape.values_mut() {
        s.foreign_keys.sort();
    }
    shape
}

#[tokio::test]
async fn the_sqlite_and_postgresql_schemas_are_the_same() {
    let Some(pg) = Db::postgres() else { return };
    let _ = pg.pg_ledger().await;
    let sqlite = Db::new();
    let _ = sqlite.ledger().await;
    let lite = sqlite_shape(&sqlite.path);
    let schema = pg.pg_schema.clone().expect("a PostgreSQL schema");
    let base = std::env::var("TEXTCREDITS_TEST_PG").expect("set with the schema");
    let post = postgres_shape(&base, &schema).await;
    assert!(lite.len() >= 9, "tables read from SQLite: {:?}", lite.keys());
    assert_eq!(lite.keys().collect::<Vec<_>>(), post.keys().collect::<Vec<_>>(), "the same tables");
    for (table, shape) in &lite {
        assert_eq!(shape, &post[table], "table {table}: SQLite (left) and PostgreSQL (right) differ");
    }
}
