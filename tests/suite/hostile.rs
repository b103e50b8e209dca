//! Hostile and careless clients (issue 11), through the real server: what a
//! client sends must not grow the server's memory (metrics labels), hold
//! its connections (slow headers, idle keep-alive, too many connections),
//! crash a handler, or store an instant the calendar code cannot handle.

use crate::util::{Db, Server};

/// A small deterministic generator (xorshift64*): random enough for
/// methods and paths, and a failure can be replayed from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `len` characters drawn from `alphabet`.
    fn word(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char).collect()
    }
}

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// No `.`: a client normalizes `/./` and `/../` away, which would reach
/// other routes than the two shapes below.
const PATH_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_";

/// Requests whose method and path are random: a made-up method or a
/// standard one, on a random path or a real route with a random id.
async fn random_requests(s: &Server, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let method = match rng.next() % 3 {
            0 => ["GET", "POST", "DELETE"][(rng.next() % 3) as usize].to_string(),
            _ => {
                let len = 3 + (rng.next() % 8) as usize;
                rng.word(UPPER, len)
            }
        };
        let len = 1 + (rng.next() % 20) as usize;
        let segment = rng.word(PATH_CHARS, len);
        let path = match rng.next() % 2 {
            0 => format!("/{segment}/{}", rng.word(PATH_CHARS, 5)),
            _ => format!("/v1/accounts/{segment}/balance"),
        };
        let a = s.call(&method, &path, None, None, None).await;
        assert!((400..500).contains(&a.status), "{method} {path}: {a:?}");
    }
}

/// The series `/metrics` shows (each line without its value).
async fn metrics_lines(s: &Server) -> Vec<String> {
    let m = s.call("GET", "/metrics", None, None, None).await;
    assert_eq!(m.status, 200, "{m:?}");
    m.text.lines().map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series).to_string()).collect()
}

/// 3,000 requests with random methods and paths leave `/metrics` exactly
/// as many lines long as a few such requests made it: label values come
/// from a fixed set, not from what clients send.
async fn random_methods_and_paths_do_not_grow_the_metrics(db: Db) {
    let s = Server::start(&db, &[]);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    // Every kind of answer once (each label set the test can reach), and
    // the scrape itself once.
    random_requests(&s, &mut rng, 200).await;
    metrics_lines(&s).await;
    let before = metrics_lines(&s).await;
    random_requests(&s, &mut rng, 3_000).await;
    let after = metrics_lines(&s).await;
    let new: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(new.is_empty(), "3,000 random requests added metrics lines: {new:#?}");
    assert_eq!(after.len(), before.len(), "3,000 random requests changed the number of metrics lines");
    let m = s.call("GET", "/metrics", None, None, None).await;
    assert!(
        m.text.contains(r#"method="other",route="unmatched",status="404""#),
        "made-up methods count as `other` and unknown paths as `unmatched`:\n{}",
        m.text
    );
}

on_every_store!(
    #[tokio::test]
    random_methods_and_paths_do_not_grow_the_metrics,
);
