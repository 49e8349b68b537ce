//! Request-path rollback trigger for consecutive payment failures on V2.
//!
//! The controller only looks every tick; a run of failing payments must not
//! wait for it. Each payment response on V2 updates one atomic counter; the
//! request that pushes it past the limit swaps the routing table to V2 = 0
//! itself, then wakes the controller, which records the decision, persists the
//! state and writes the report.
//!
//! The trip latches. Between the request path's swap and the controller's
//! handling of it, the controller may still run a tick, a reload or an admin
//! command computed from the state before the trip; storing that state's
//! table would give V2 its weight back for a moment, and re-arming would let
//! a second trip count from zero. So while latched the controller's tables
//! reach the router only if they give V2 nothing ([`PaymentTrip::publish`]),
//! and arming is refused; only the controller's handling of the trip, once
//! the state says rolled back, releases the latch.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use crate::routing::{RouteTable, Router, Variant};

/// What one payment response says about V2's payments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// A 2xx: the only answer that ends a streak of failures.
    Succeeded,
    /// A 5xx, or the upstream failed (502/504): counts towards the streak.
    Failed,
    /// Anything else (1xx, 3xx, 4xx, a client's broken body): says nothing
    /// about V2, so a client cannot end a real streak with a 4xx of its own.
    Neither,
}

impl PaymentOutcome {
    #[inline]
    pub fn of(status: http::StatusCode) -> Self {
        if status.is_success() {
            PaymentOutcome::Succeeded
        } else if status.is_server_error() {
            PaymentOutcome::Failed
        } else {
            PaymentOutcome::Neither
        }
    }
}

pub struct PaymentTrip {
    limit: AtomicU32,
    consecutive: AtomicU32,
    /// Only a live rollout can be rolled back; the controller arms and disarms it.
    armed: AtomicBool,
    /// Set by the tripping request before its swap; cleared only by
    /// [`PaymentTrip::release`] once the controller has handled the trip.
    latched: AtomicBool,
    router: Arc<Router>,
    /// Nanoseconds from `origin` to the trip and to the finished swap.
    origin: Instant,
    tripped_ns: AtomicU64,
    swapped_ns: AtomicU64,
    pub notify: Notify,
}

/// When the trip fired, for the report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Trip {
    pub failures: u32,
    /// Time from the failing response being seen to the routing swap.
    pub trigger_to_swap_ns: u64,
}

impl PaymentTrip {
    pub fn new(limit: u32, router: Arc<Router>) -> Self {
        Self {
            limit: AtomicU32::new(limit),
            consecutive: AtomicU32::new(0),
            armed: AtomicBool::new(false),
            latched: AtomicBool::new(false),
            router,
            origin: Instant::now(),
            tripped_ns: AtomicU64::new(0),
            swapped_ns: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    /// Changes the limit (config reload).
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Arms or disarms; a change of state starts the failure run from zero.
    /// A latched trip stays disarmed until it is released.
    pub fn arm(&self, armed: bool) {
        let armed = armed && !self.is_latched();
        if self.armed.swap(armed, Ordering::AcqRel) != armed {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
    }

    /// Whether a trip's swap stands until the controller has handled it.
    pub fn is_latched(&self) -> bool {
        self.latched.load(Ordering::SeqCst)
    }

    /// The controller's only way to store a routing table. While a trip is
    /// latched, a table that gives V2 traffic (weight or mirror) is not
    /// stored; returns whether `table` is in force.
    ///
    /// A compare-and-swap against the table looked at, because the trip can
    /// land at any moment in between: the latch is read after that table
    /// was loaded, so either the trip's swap came first and the latch is
    /// seen, or it comes after and the swap replaces our table, or it lands
    /// between the load and the exchange and the exchange fails and looks
    /// again. No store of ours can land after the trip's swap.
    pub fn publish(&self, table: RouteTable) -> bool {
        let gives_v2 = table.v2.bp() > 0 || table.shadow;
        let table = Arc::new(table);
        loop {
            let current = self.router.table.load_full();
            if gives_v2 && self.is_latched() {
                return false;
            }
            let prev = self.router.table.compare_and_swap(&current, table.clone());
            if Arc::ptr_eq(&prev, &current) {
                return true;
            }
        }
    }

    /// The controller has handled the trip (the state says rolled back):
    /// tables giving V2 traffic may be stored again, by an operator's action.
    pub fn release(&self) {
        self.latched.store(false, Ordering::SeqCst);
    }

    /// Called for every payment-journey response.
    #[inline]
    pub fn observe(&self, variant: Variant, outcome: PaymentOutcome) {
        if variant != Variant::V2 {
            return;
        }
        match outcome {
            PaymentOutcome::Failed => {}
            PaymentOutcome::Succeeded => {
                self.consecutive.store(0, Ordering::Relaxed);
                return;
            }
            PaymentOutcome::Neither => return,
        }
        let seen = Instant::now();
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        // `swap` makes exactly one request perform the rollback.
        if n > self.limit.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            // The latch before the swap: a controller store that sees our
            // table also sees the latch (see `publish`).
            self.latched.store(true, Ordering::SeqCst);
            self.router.rollback();
            let done = self.origin.elapsed().as_nanos() as u64;
            let start = seen.duration_since(self.origin).as_nanos() as u64;
            self.tripped_ns.store(start.max(1), Ordering::Relaxed);
            self.swapped_ns
                .store(done.max(start + 1), Ordering::Release);
            self.notify.notify_one();
        }
    }

    /// Returns the trip once, after it happened.
    pub fn take_trip(&self) -> Option<Trip> {
        let swapped = self.swapped_ns.swap(0, Ordering::Acquire);
        (swapped != 0).then(|| Trip {
            failures: self.consecutive.load(Ordering::Relaxed),
            trigger_to_swap_ns: swapped - self.tripped_ns.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{RouteTable, WeightBp};

    #[test]
    fn trips_after_more_than_limit_consecutive_v2_failures_only() {
        let router = Arc::new(Router::new(RouteTable {
            v2: WeightBp::from_percent(25.0).unwrap(),
            ..RouteTable::default()
        }));
        let trip = PaymentTrip::new(5, router.clone());
        trip.arm(true);
        for _ in 0..5 {
            trip.observe(Variant::V2, PaymentOutcome::Failed);
        }
        trip.observe(Variant::V2, PaymentOutcome::Succeeded); // a success resets the run
        for _ in 0..5 {
            trip.observe(Variant::V2, PaymentOutcome::Failed);
            trip.observe(Variant::V1, PaymentOutcome::Failed); // V1 failures do not count
        }
        assert_eq!(router.load().v2.bp(), 2_500);
        assert!(trip.take_trip().is_none());
        trip.observe(Variant::V2, PaymentOutcome::Failed);
        assert_eq!(router.load().v2, WeightBp::ZERO);
        let t = trip.take_trip().unwrap();
        assert_eq!(t.failures, 6);
        assert!(trip.take_trip().is_none());
        assert!(!trip.is_armed());
    }

    #[test]
    fn a_4xx_neither_counts_nor_ends_a_streak_only_a_2xx_does() {
        use http::StatusCode;
        let router = Arc::new(Router::new(RouteTable {
            v2: WeightBp::from_percent(5.0).unwrap(),
            ..RouteTable::default()
        }));
        let trip = PaymentTrip::new(5, router.clone());
        trip.arm(true);
        let observe = |s: u16| {
            trip.observe(
                Variant::V2,
                PaymentOutcome::of(StatusCode::from_u16(s).unwrap()),
            )
        };
        // A client's 4xx (bad card, bad body) between real failures changes nothing.
        for _ in 0..5 {
            observe(503);
            observe(402);
            observe(408);
        }
        observe(302);
        assert_eq!(router.load().v2.bp(), 500, "5 failures are not more than 5");
        // Floods of 4xx never trip either.
        let quiet = PaymentTrip::new(5, router.clone());
        quiet.arm(true);
        for _ in 0..100 {
            quiet.observe(Variant::V2, PaymentOutcome::of(StatusCode::BAD_REQUEST));
        }
        assert!(quiet.take_trip().is_none());
        // The sixth failure trips: the 4xx in between did not reset the run.
        observe(502);
        assert_eq!(router.load().v2, WeightBp::ZERO);
        assert_eq!(trip.take_trip().unwrap().failures, 6);
        // And a 2xx does reset it.
        let again = PaymentTrip::new(1, router.clone());
        again.arm(true);
        again.observe(Variant::V2, PaymentOutcome::Failed);
        again.observe(Variant::V2, PaymentOutcome::Succeeded);
        again.observe(Variant::V2, PaymentOutcome::Failed);
        assert!(again.take_trip().is_none());
    }

    #[test]
    fn a_trip_latches_until_the_controller_releases_it() {
        let table = |pct: f64| RouteTable {
            v2: WeightBp::from_percent(pct).unwrap(),
            ..RouteTable::default()
        };
        let router = Arc::new(Router::new(RouteTable::default()));
        let trip = PaymentTrip::new(1, router.clone());
        assert!(trip.publish(table(25.0)));
        trip.arm(true);
        trip.observe(Variant::V2, PaymentOutcome::Failed);
        trip.observe(Variant::V2, PaymentOutcome::Failed);
        assert_eq!(router.load().v2, WeightBp::ZERO);
        assert!(trip.is_latched());
        // A tick or command computed from the state before the trip: its
        // weight does not come back, nor does a mirror, and arming is refused.
        assert!(!trip.publish(table(25.0)));
        assert!(!trip.publish(RouteTable {
            shadow: true,
            ..RouteTable::default()
        }));
        assert_eq!(router.load().v2, WeightBp::ZERO);
        trip.arm(true);
        assert!(!trip.is_armed());
        // The rolled-back table itself may be stored.
        assert!(trip.publish(table(0.0)));
        // Handling the trip does not release it by itself; `release` does.
        assert!(trip.take_trip().is_some());
        assert!(trip.is_latched());
        trip.release();
        assert!(trip.publish(table(5.0)));
        assert_eq!(router.load().v2.bp(), 500);
        trip.arm(true);
        assert!(trip.is_armed());
    }

    #[test]
    fn a_store_racing_a_trip_never_lands_after_its_swap() {
        // Many rounds of the controller publishing while a request trips:
        // whatever the interleaving, the last word is the trip's.
        for _ in 0..200 {
            let router = Arc::new(Router::new(RouteTable::default()));
            let trip = Arc::new(PaymentTrip::new(0, router.clone()));
            trip.arm(true);
            let publisher = {
                let trip = trip.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        trip.publish(RouteTable {
                            v2: WeightBp::FULL,
                            ..RouteTable::default()
                        });
                    }
                })
            };
            trip.observe(Variant::V2, PaymentOutcome::Failed);
            publisher.join().unwrap();
            assert_eq!(router.load().v2, WeightBp::ZERO);
        }
    }

    #[test]
    fn disarmed_never_trips() {
        let router = Arc::new(Router::new(RouteTable {
            v2: WeightBp::FULL,
            ..RouteTable::default()
        }));
        let trip = PaymentTrip::new(1, router.clone());
        for _ in 0..10 {
            trip.observe(Variant::V2, PaymentOutcome::Failed);
        }
        assert_eq!(router.load().v2, WeightBp::FULL);
    }
}
