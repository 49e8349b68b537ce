//! Revenue ("positive signal"): `revenue` beacon events carry an amount
//! (the currency's minor unit, e.g. cents), summed per name and variant at
//! the edge. Over a window, per variant:
//!
//! - **revenue per user** = the sum / the users seen (users who sent a
//!   beacon of any name), and
//! - **paying share** = the users who sent that name / the users seen.
//!
//! Both are reported for every name that had revenue in the window (gate
//! reports, phase cards). With `gates.revenue_per` the `revenue` gate
//! compares them V2 against V1:
//!
//! - the **value** (and, for the window judge, the zone) is V2's revenue
//!   per user against V1's times `1 - revenue_max_drop`;
//! - the **test** is on the paying share. The sequential judge (`method =
//!   "sequential"`) counts, tick by tick, the users who paid among the
//!   users seen that the window gained on each variant, as the rates of a ratio (`evidence.rs`,
//!   `Counts::Ratio`, harm when lower): *inside* once V2's paying rate is
//!   shown at least `1 - revenue_max_drop` times V1's, *breach* once it is
//!   shown below. The window judge (`method = "window"`) uses the
//!   two-proportion z test of the window's paying shares, V2 lower than V1
//!   (`significance::two_proportion`).
//!
//! Why the test is on the share and not on the revenue: revenue per user is
//! the mean of a very skewed quantity (most users pay nothing, a few pay a
//! lot, one client may claim several purchases), so a normal approximation
//! of its mean needs far more users than a window has, and its variance
//! needs per-user sums the edge does not keep (one bit per user, no
//! identifier). The share of users who paid is a proportion of distinct
//! users, bounded, with the variance the z test assumes, and a user counts
//! once however much they claim. What is only reported, then, is how much a
//! payer spends: a V2 whose payers spend less with the same paying share
//! moves the value but not the test, so neither judge turns it RED on that
//! alone (the report line shows it beside the verdict).
//!
//! Opted-out senders (`Sec-GPC`, `DNT`) add revenue but are no users: the
//! per-user figures are overstated by their share of revenue, on both
//! variants alike (routing does not depend on the opt-out), so V2 / V1 is
//! not biased by it.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::routing::Variant;
use crate::telemetry::beacons::BeaconType;
use crate::telemetry::Window;

use super::beacons::delta;
use super::evidence::{Counts, Harm};
use super::judge::{Bound, Evidence, Measure};
use super::significance::{two_proportion, Worse};
use super::{Evaluation, Gate, GateContext, GateResult, VariantKpi};

/// One revenue name over the window, for one variant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Revenue {
    pub name: String,
    /// Sum of the amounts, in minor currency units.
    pub revenue: u64,
    /// `revenue` events.
    pub purchases: u64,
    /// Users who sent an event of this name.
    pub payers: u64,
    /// Users who sent an event of any name.
    pub users: u64,
}

impl Revenue {
    /// Revenue per user seen, in minor currency units.
    pub fn per_user(&self) -> Option<f64> {
        (self.users > 0).then(|| self.revenue as f64 / self.users as f64)
    }

    /// The share of users seen who paid.
    pub fn paying_share(&self) -> Option<f64> {
        (self.users > 0).then(|| self.payers as f64 / self.users as f64)
    }
}

/// Sets each variant's revenue figures: every beacon name with a `revenue`
/// event in the window on either variant, and the gate's name always.
pub(super) fn figures(window: &Window, cfg: &Config, ev: &mut Evaluation) {
    let names = &cfg.beacons.names;
    let purchases = |i: usize, v: Variant| {
        window
            .beacon(i, v)
            .map_or(0, |b| b.counts[BeaconType::Revenue as usize])
    };
    let used: Vec<usize> = (0..names.len())
        .filter(|&i| {
            cfg.gates.revenue_per == Some(i) || Variant::ALL.iter().any(|&v| purchases(i, v) > 0)
        })
        .collect();
    if used.is_empty() {
        return;
    }
    for (v, kpi) in [(Variant::V1, &mut ev.v1), (Variant::V2, &mut ev.v2)] {
        let users = window.beacon_users.seen(v).count();
        kpi.revenue = used
            .iter()
            .map(|&i| Revenue {
                name: names[i].clone(),
                revenue: window.beacon(i, v).map_or(0, |b| b.revenue),
                purchases: purchases(i, v),
                payers: window.beacon_users(i, v).count(),
                users,
            })
            .collect();
    }
}

/// The figures of `name` for one variant (none: zeros).
pub(crate) fn of<'a>(kpi: &'a VariantKpi, name: &str) -> Option<&'a Revenue> {
    kpi.revenue.iter().find(|r| r.name == name)
}

/// The `revenue` gate, when `gates.revenue_per` names a beacon.
pub(super) fn gate(window: &Window, ev: &Evaluation, ctx: &GateContext<'_>) -> Option<GateResult> {
    let g = &ctx.cfg.gates;
    let name = ctx.cfg.beacons.names.get(g.revenue_per?)?;
    let none = Revenue::default();
    let r1 = of(&ev.v1, name).unwrap_or(&none);
    let r2 = of(&ev.v2, name).unwrap_or(&none);
    // The payers and users the window gained since the evidence last
    // looked (distinct users do not add up over ticks).
    let i = g.revenue_per?;
    let users = |w: &Window, v: Variant| {
        let u = &w.beacon_users;
        (u.of(i, v).count(), u.seen(v).count())
    };
    let gained = |v| delta(users(window, v), users(ctx.seen, v));
    let ((x1, n1), (x2, n2)) = (gained(Variant::V1), gained(Variant::V2));
    Some(ctx.gate(Measure {
        gate: Gate::Revenue,
        journey: Some(name),
        bound: Bound::Min,
        what: "V2 revenue per user",
        value: r2.per_user(),
        threshold: r1.per_user().unwrap_or(0.0) * (1.0 - g.revenue_max_drop),
        samples: r2.users,
        min_samples: ctx.cfg.rollout.min_samples,
        control_samples: Some(r1.users),
        evidence: Evidence::Test(two_proportion(
            r1.payers,
            r1.users,
            r2.payers,
            r2.users,
            Worse::Lower,
        )),
        counted: "users who paid per user seen",
        counts: Some(Counts::Ratio {
            x1,
            n1: n1 as f64,
            x2,
            n2: n2 as f64,
            m: 1.0 - g.revenue_max_drop,
            harm: Harm::Lower,
            floor: 0.0,
        }),
    }))
}
