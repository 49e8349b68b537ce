//! Beacon ingestion on one core: parse a JSON batch (borrowed serde pass into
//! a stack array) and record it into the lock-free counters, as
//! `POST /_rollgate/beacon` does after reading the body.
//!
//! `cargo bench --bench beacons`; throughput is in events/s (criterion's
//! "elem/s"). Numbers: BENCHMARKS-beacons.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rollgate::config::BeaconsConfig;
use rollgate::edge::beacon::{parse, Batch};
use rollgate::routing::Variant;
use rollgate::telemetry::Telemetry;

/// A browser's typical batch: a page view, a click, a first-result timing, a
/// JS error now and then, with the keys real clients add (ignored).
const EVENTS: [&str; 4] = [
    r#"{"type":"funnel","name":"page_view","url":"/search?q=scholarships"}"#,
    r#"{"type":"funnel","name":"search_result_click","position":3}"#,
    r#"{"type":"timing","name":"first_result_ms","value":184.7}"#,
    r#"{"type":"js_error","name":"js_error","message":"TypeError: x is undefined","line":42}"#,
];

fn batch(n: usize) -> String {
    let events: Vec<&str> = (0..n).map(|i| EVENTS[i % EVENTS.len()]).collect();
    format!("[{}]", events.join(","))
}

fn ingest(c: &mut Criterion) {
    let names = BeaconsConfig {
        names: [
            "page_view",
            "js_error",
            "search_result_click",
            "first_result_ms",
            "registration_start",
            "registration_complete",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    let telemetry = Telemetry::with_beacons(8, names.names.len(), true);
    let mut group = c.benchmark_group("beacon_ingest");
    for n in [1usize, 10, 100] {
        let body = batch(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("parse_and_record", n), &body, |b, body| {
            let mut out = Batch::default();
            b.iter(|| {
                parse(black_box(body.as_bytes()), &names, &mut out).unwrap();
                out.record(&telemetry.beacons, Variant::V2);
            })
        });
    }
    // The refusal path: an unknown name in the last event of a full batch.
    let mut bad = batch(99);
    bad.pop();
    bad.push_str(r#",{"type":"funnel","name":"user@example.com"}]"#);
    group.throughput(Throughput::Elements(100));
    group.bench_function("reject_unknown_name_100", |b| {
        let mut out = Batch::default();
        b.iter(|| parse(black_box(bad.as_bytes()), &names, &mut out).unwrap_err())
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
