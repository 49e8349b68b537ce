use super::*;

fn j(i: u16) -> JourneyId {
    JourneyId::new(i)
}

#[test]
fn records_land_in_their_cell_only() {
    let t = Arc::new(Telemetry::new(3, true));
    t.record(j(1), Variant::V2, Duration::from_millis(12), 503, false);
    t.record(j(1), Variant::V2, Duration::from_millis(8), 200, true);
    t.record_upstream_error(j(1), Variant::V2, UpstreamErrorKind::Timeout);
    let s = t.snapshot();
    let c = s.cell(j(1), Variant::V2);
    assert_eq!(c.requests(), 2);
    assert_eq!(c.server_errors(), 1);
    assert_eq!(c.cache_hits, 1);
    assert_eq!(c.errors[UpstreamErrorKind::Timeout as usize], 1);
    assert_eq!(c.latency.sum_us, 20_000);
    assert_eq!(s.cell(j(1), Variant::V1).requests(), 0);
    assert_eq!(s.cell(j(0), Variant::V2).requests(), 0);
}

#[test]
fn inflight_guard_counts_across_threads() {
    let t = Arc::new(Telemetry::new(1, true));
    let g = t.inflight(j(0), Variant::V2);
    assert_eq!(t.inflight_of(Variant::V2), 1);
    // Dropped on another thread, as when a task migrates between workers.
    std::thread::spawn(move || drop(g)).join().unwrap();
    assert_eq!(t.inflight_of(Variant::V2), 0);
    assert_eq!(t.inflight_of(Variant::V1), 0);
}

#[test]
fn interval_snapshots_are_deltas_and_windows_merge_them() {
    let t = Arc::new(Telemetry::new(2, true));
    let mut ring = IntervalRing::new(Duration::from_secs(60));
    assert!(ring.push(0, t.snapshot()).is_none());
    for _ in 0..5 {
        t.record(j(0), Variant::V1, Duration::from_micros(100), 200, false);
    }
    let i1 = ring.push(10_000, t.snapshot()).unwrap();
    assert_eq!(i1.duration_ms, 10_000);
    assert_eq!(i1.cells[0].latency.count(), 5);
    for _ in 0..3 {
        t.record(j(0), Variant::V1, Duration::from_micros(100), 500, false);
    }
    let i2 = ring.push(20_000, t.snapshot()).unwrap();
    assert_eq!(i2.cells[0].classes[StatusClass::ServerError as usize], 3);
    assert_eq!(i2.cells[0].latency.count(), 3);

    let last10 = ring.window(2, 20_000, Duration::from_secs(10));
    assert_eq!(last10.intervals, 1);
    assert_eq!(last10.cell(j(0), Variant::V1).requests(), 3);
    let last20 = ring.window(2, 20_000, Duration::from_secs(20));
    assert_eq!(last20.cell(j(0), Variant::V1).requests(), 8);
    assert_eq!(last20.variant_total(Variant::V1).requests(), 8);
    assert_eq!(last20.variant_total(Variant::V2).requests(), 0);

    // Intervals older than the ring's horizon are dropped.
    ring.push(90_000, t.snapshot());
    assert_eq!(ring.intervals().count(), 1);
}

#[test]
fn disabled_telemetry_records_nothing() {
    let t = Telemetry::new(1, false);
    t.record(j(0), Variant::V1, Duration::from_millis(1), 200, false);
    assert_eq!(t.snapshot().cell(j(0), Variant::V1).requests(), 0);
}

#[test]
fn a_body_broken_after_its_head_is_one_server_error_and_a_client_refusal_no_sample() {
    let t = Arc::new(Telemetry::new(1, true));
    // 200 whose body then stalled; 503 whose body then reset; a client's 408.
    t.record(j(0), Variant::V2, Duration::from_millis(5), 200, false);
    t.inflight(j(0), Variant::V2)
        .record_broken_body(UpstreamErrorKind::Timeout, false);
    t.record(j(0), Variant::V2, Duration::from_millis(5), 503, false);
    t.inflight(j(0), Variant::V2)
        .record_broken_body(UpstreamErrorKind::Reset, true);
    t.record_status(j(0), Variant::V2, 408);
    let s = t.snapshot();
    let c = s.cell(j(0), Variant::V2);
    assert_eq!(c.requests(), 3);
    assert_eq!(c.server_errors(), 2, "each failed request once");
    assert_eq!(c.classes[StatusClass::ClientError as usize], 1);
    assert_eq!(c.latency.count(), 2, "no sample for the client's 408");
    assert_eq!(c.errors[UpstreamErrorKind::Timeout as usize], 1);
    assert_eq!(c.errors[UpstreamErrorKind::Reset as usize], 1);
    // And it survives the interval ring into the window the gates read.
    let mut ring = IntervalRing::new(Duration::from_secs(60));
    ring.push(0, Telemetry::new(1, true).snapshot());
    ring.push(10_000, s);
    let w = ring.window(1, 10_000, Duration::from_secs(60));
    assert_eq!(w.cell(j(0), Variant::V2).server_errors(), 2);
    assert_eq!(w.variant_total(Variant::V2).server_errors(), 2);
}
