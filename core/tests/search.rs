//! Phone search against a brute-force substring match over the same records: random queries of
//! 1–12 characters drawn from the records' own text, punctuation, digits, ASCII and the FTS5
//! syntax characters. Seeded: a failure prints its seed, `GRIDLINK_SEED=<seed>` replays it;
//! `PROPTEST_CASES` sets the number of queries (default 300).

mod common;

use std::collections::BTreeSet;

use common::*;
use gridlink_core::{NewIncident, RecordBody};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Pieces the records' text is made of: Chinese words, numbers, mixed-case ASCII, punctuation
/// and what the FTS5 query syntax gives a meaning to.
const PIECES: &[&str] = &[
    "东街",
    "4号",
    "垃圾",
    "堆放",
    "河堤路",
    "违章搭建",
    "噪音",
    "OR",
    "or",
    "NEAR",
    "near",
    "AND",
    "NOT",
    "\"",
    "*",
    "^",
    "-",
    ":",
    "(",
    ")",
    "'",
    "%",
    "_",
    "\\",
    " ",
    "  ",
    "，",
    "。",
    "、",
    "！",
    "？",
    "A",
    "b",
    "Cd",
    "x1",
    "2026",
    "13",
    "0",
    "...",
    "#",
    "+",
    "{",
    "}",
];

/// Extra characters a query may hold that no record does, control characters among them.
const QUERY_ONLY: &[char] = &['\0', '\u{1f}', '\t', '\n', 'Z', 'q', '9', '\u{7f}', '锅', '·'];

fn text(rng: &mut rand::rngs::StdRng, max_pieces: usize) -> String {
    let n = rng.random_range(0..=max_pieces);
    (0..n).map(|_| *PIECES.choose(rng).unwrap()).collect()
}

/// What a person would call "the query occurs in the record": in one of its fields, ignoring
/// the case of ASCII letters, after dropping control characters and surrounding whitespace.
fn brute_force(fields: &[(String, Vec<String>)], query: &str) -> BTreeSet<String> {
    let q: String = query.chars().filter(|c| !c.is_control()).collect();
    let q = q.trim().to_ascii_lowercase();
    if q.is_empty() {
        return BTreeSet::new();
    }
    fields.iter().filter(|(_, fs)| fs.iter().any(|f| f.to_ascii_lowercase().contains(&q))).map(|(id, _)| id.clone()).collect()
}

#[test]
fn search_agrees_with_a_substring_match() {
    let seed: u64 = std::env::var("GRIDLINK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with GRIDLINK_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut phone = Device::new(grid_member(), at(2026, 11, 16, 9));
    let catalog = gridlink_core::Catalog::bundled();
    let mut fields = Vec::new();
    for i in 0..40 {
        let category = ["0501", "0503", "0602"][i % 3];
        let title = format!("{}{}", text(&mut rng, 4), ["OR", "东街", "事件"][i % 3]);
        let new = NewIncident {
            category: category.into(),
            title: if title.trim().is_empty() { "事件".into() } else { title },
            description: text(&mut rng, 6),
            address: text(&mut rng, 3),
            note: text(&mut rng, 3),
            ..Default::default()
        };
        let id = phone.create_incident(new).unwrap();
        let view = phone.get(&id).unwrap();
        let RecordBody::Incident(f) = &view.record.body else { unreachable!() };
        let mut fs = vec![f.title.clone(), f.description.clone(), f.address.clone(), f.notes.clone()];
        fs.push(catalog.category(&f.category).unwrap().name.clone());
        fs.push(view.record.display_no().to_owned());
        fs.extend(view.record.timeline.iter().map(|e| e.note.clone()));
        fields.push((id, fs));
    }
    // The records' text as one string, fields joined by spaces: a query drawn from it may span
    // two fields, which must not match unless one field holds it.
    let joined: Vec<char> = fields.iter().flat_map(|(_, fs)| fs.iter()).flat_map(|f| f.chars().chain([' '])).collect();
    let alphabet: Vec<char> = PIECES.iter().flat_map(|p| p.chars()).chain(QUERY_ONLY.iter().copied()).collect();
    let query = prop_oneof![
        // A slice of the records' own text, 1–12 characters.
        (0..joined.len(), 1usize..=12).prop_map(move |(at, len)| joined[at..(at + len).min(joined.len())].iter().collect::<String>()),
        // Any characters of the alphabet.
        proptest::collection::vec(proptest::sample::select(alphabet), 1..=12).prop_map(|cs| cs.into_iter().collect::<String>()),
    ];
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &{
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            s
        }),
    );
    let result = runner.run(&query, |q| {
        let found = phone.search(&q, 200).map_err(|e| TestCaseError::fail(format!("{q:?}: {e}")))?;
        let found: BTreeSet<String> = found.into_iter().map(|r| r.id).collect();
        prop_assert_eq!(found, brute_force(&fields, &q), "query {:?}", q);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e} (seed {seed})");
    }
}

#[test]
fn odd_queries_never_raise_a_storage_error() {
    let mut phone = Device::new(grid_member(), at(2026, 11, 16, 9));
    let id = phone
        .create_incident(NewIncident {
            category: "0501".into(),
            title: "东街4号垃圾".into(),
            description: "堆放垃圾".into(),
            address: "河堤路".into(),
            ..Default::default()
        })
        .unwrap();
    // A NUL used to end the FTS string early (`unterminated string`), and a query of only a NUL
    // matched every record.
    assert!(phone.search("\0", 50).unwrap().is_empty());
    assert_eq!(phone.search("东街\0", 50).unwrap().len(), 1);
    assert_eq!(phone.search("东\0街4号", 50).unwrap()[0].id, id);
    for q in ["\"", "\"\"", "*", "OR", "NEAR(", "^东", "-", ":", "title:东街", "东街\" OR \"", "%", "_", "\\"] {
        phone.search(q, 50).unwrap_or_else(|e| panic!("{q:?}: {e}"));
    }
    // Fields are searched one by one: the end of the description and the start of the address
    // do not make a match together.
    assert!(phone.search("垃圾 河堤", 50).unwrap().is_empty());
    assert!(phone.search("圾 河", 50).unwrap().is_empty());
    assert_eq!(phone.search("4号垃", 50).unwrap().len(), 1);
}

#[test]
fn search_pages_through_every_match_with_a_total() {
    let mut phone = Device::new(grid_member(), at(2026, 11, 16, 9));
    let mut ids = BTreeSet::new();
    for i in 0..230 {
        phone.clock.advance(1000);
        let title = format!("河堤垃圾{i}");
        ids.insert(phone.create_incident(NewIncident { category: "0501".into(), title, ..Default::default() }).unwrap());
    }
    phone.create_incident(NewIncident { category: "0501".into(), title: "别的事".into(), ..Default::default() }).unwrap();
    // No silent cap at 200: every match is reachable, each once, and the total says how many.
    for query in ["河堤垃圾", "河堤"] {
        let mut seen = BTreeSet::new();
        let mut offset = 0;
        loop {
            let page = phone.search_page(query, 100, offset).unwrap();
            assert_eq!(page.total, 230, "{query}");
            if page.items.is_empty() {
                break;
            }
            for r in &page.items {
                assert!(seen.insert(r.id.clone()), "{query}: {} twice", r.id);
            }
            offset += page.items.len();
        }
        assert_eq!(seen, ids, "{query}");
    }
    assert_eq!(phone.search("河堤", 500).unwrap().len(), 200, "a page holds at most 200");
}

#[test]
fn a_store_whose_search_rows_are_keyed_by_id_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let mut phone = gridlink_core::Client::open(&path).unwrap();
    phone.set_identity(grid_member()).unwrap();
    let titles = ["河堤垃圾堆放", "东街噪音扰民", "违章搭建彩钢棚"];
    let ids: Vec<String> = titles
        .iter()
        .map(|t| phone.create_incident(NewIncident { category: "0501".into(), title: (*t).into(), ..Default::default() }).unwrap())
        .collect();
    drop(phone);
    // As schema version 5 left it: search rows keyed by the record id, with rowids of their own
    // (here in the reverse order of the records').
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE old_rows AS SELECT id, title, body FROM records_fts;
         DROP TABLE records_fts;
         CREATE VIRTUAL TABLE records_fts USING fts5(id UNINDEXED, title, body, tokenize = 'trigram');
         INSERT INTO records_fts(id, title, body) SELECT id, title, body FROM old_rows ORDER BY id DESC;
         DROP TABLE old_rows;
         PRAGMA user_version = 5;",
    )
    .unwrap();
    drop(conn);

    let mut phone = gridlink_core::Client::open(&path).unwrap();
    phone.set_identity(grid_member()).unwrap();
    for (id, title) in ids.iter().zip(titles) {
        let found: Vec<String> = phone.search(&title[..9], 10).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(found, std::slice::from_ref(id), "{title}");
    }
    // Rewriting a record's row replaces its search row, and forgetting it removes it.
    let edit = gridlink_core::IncidentEdit { title: Some("河堤垃圾已清理".into()), ..Default::default() };
    phone.edit_incident(&ids[0], edit).unwrap();
    assert!(phone.search("堆放", 10).unwrap().is_empty());
    assert_eq!(phone.search("已清理", 10).unwrap().len(), 1);
    phone.forget(&ids[1]).unwrap();
    assert!(phone.search("噪音扰民", 10).unwrap().is_empty());
    assert_eq!(phone.search("彩钢棚", 10).unwrap()[0].id, ids[2]);
}
