//! Journey classification: the first input line declares journeys (one
//! per space-separated word: `/prefix`, or a `*`/`**` pattern when the word
//! starts with `~`), the rest is the request path. Never panics, always
//! yields a configured journey or `other`.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use rollgate::routing::journeys::{Journey, JourneyKind, Journeys, PathMatch};

const METHODS: [Method; 4] = [Method::GET, Method::POST, Method::PUT, Method::DELETE];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (decl, path) = text.split_once('\n').unwrap_or(("", text));
    let list: Vec<Journey> = decl
        .split(' ')
        .filter(|w| !w.is_empty())
        .take(16)
        .enumerate()
        .map(|(i, w)| Journey {
            name: format!("j{i}"),
            path: match w.strip_prefix('~') {
                Some(p) => PathMatch::Pattern(
                    p.trim_start_matches('/')
                        .split('/')
                        .map(String::from)
                        .collect(),
                ),
                None => PathMatch::Prefix(w.to_string()),
            },
            methods: (i as u16 * 7) & 0x1f,
            kind: JourneyKind::Normal,
        })
        .collect();
    let n = list.len();
    let js = Journeys::new(list);
    let method = &METHODS[path.len() % METHODS.len()];
    let id = js.classify(method, path);
    assert!(id.index() <= n);
    let name = js.name(id);
    assert!(name == "other" || name.starts_with('j'));
});
