//! The request path's telemetry and the beacon parser allocate nothing per
//! request or event: a counting global allocator watches this thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use rollgate::config::BeaconsConfig;
use rollgate::journeys::JourneyId;
use rollgate::proxy::beacon::{parse, Batch};
use rollgate::routing::Variant;
use rollgate::stats::Telemetry;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(|c| c.get());
    f();
    ALLOCS.with(|c| c.get()) - before
}

#[test]
fn beacon_parse_and_record_allocate_nothing() {
    let names = BeaconsConfig {
        names: ["page_view", "js_error", "first_result_ms"]
            .map(String::from)
            .to_vec(),
    };
    let t = Telemetry::with_beacons(3, names.names.len(), true);
    let event = r#"{"type":"timing","name":"first_result_ms","value":123.4,"url":"/x"},{"type":"funnel","name":"page_view"},{"type":"js_error","name":"js_error","message":"TypeError: x is undefined"}"#;
    let body = format!("[{}]", vec![event; 33].join(","));
    let mut batch = Batch::default();
    // Warm up thread-locals (stripe index) outside the measurement.
    parse(body.as_bytes(), &names, &mut batch).unwrap();
    batch.record(&t.beacons, Variant::V1);
    let n = allocations_in(|| {
        for _ in 0..100 {
            parse(body.as_bytes(), &names, &mut batch).unwrap();
            batch.record(&t.beacons, Variant::V2);
        }
    });
    assert_eq!(n, 0, "allocations while ingesting 9,900 events");
    assert_eq!(batch.events().len(), 99);
    let snap = t.beacons.snapshot();
    assert_eq!(snap[2 * 2 + 1].counts[2], 3_300); // first_result_ms timings on V2
}

#[test]
fn request_telemetry_allocates_nothing() {
    let t = Arc::new(Telemetry::new(4, true));
    t.record(
        JourneyId::new(0),
        Variant::V1,
        Duration::from_millis(1),
        200,
        false,
    );
    let n = allocations_in(|| {
        for i in 0..10_000u64 {
            let j = JourneyId::new((i % 4) as u16);
            let g = t.inflight(j, Variant::V2);
            t.record(
                j,
                Variant::V2,
                Duration::from_micros(i * 37),
                200 + (i % 5) as u16 * 100,
                i % 3 == 0,
            );
            drop(g);
        }
    });
    assert_eq!(n, 0);
}
