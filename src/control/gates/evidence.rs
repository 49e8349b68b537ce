//! Anytime-valid evidence from counts: what the sequential judge
//! (`sequential.rs`) accumulates tick after tick.
//!
//! Every tested gate reduces to counts of one of two shapes ([`Counts`]):
//!
//! - **Share**: of `n` V2 trials in the tick, `bad` were bad (a 5xx, a
//!   failed payment, a cache miss, a request slower than the P95 limit); the
//!   gate is inside while V2's bad share `p <= p0`.
//! - **Ratio**: events of V2 against V1 per exposure (users with a JS error
//!   per user with a page view, conversions per start): V2's rate is at most
//!   (or, for conversions, at least) `m` times V1's.
//!
//! ## Likelihood ratios
//!
//! *Share.* Requests are Bernoulli(p) given the tick's `n`. For an
//! alternative `q = r p0`, the tick's likelihood ratio against `p0` is
//!
//! ```text
//!   LR(r) = (q/p0)^bad ((1-q)/(1-p0))^(n-bad)
//! ```
//!
//! For r > 1 and any p <= p0, `E[LR] = (p q/p0 + (1-p)(1-q)/(1-p0))^n <= 1`:
//! a product of such factors over ticks is a nonnegative supermartingale
//! under "inside". For r < 1 and any p >= p0 the same holds with the roles
//! swapped, which is the evidence *for* inside.
//!
//! *Ratio* (Lindon & Malek 2022, counts as time-inhomogeneous Poisson
//! processes). With exposures `n1`, `n2` and events `x1`, `x2` in a tick,
//! V2's events are a thinning of all events: given `k = x1 + x2`, `x2` is
//! Binomial(k, θ) with `θ = ρλ / (ρλ + 1 - ρ)`, `ρ` V2's share of the
//! exposure (the phase's so far: `sequential.rs` says why) and `λ`
//! V2's rate over V1's. "λ <= m" is "θ <= θ0 = θ(m)", whatever V1's own
//! rate does from tick to tick (it cancels), and an alternative `λ = r m`
//! gives the same LR shape in `θ(rm)` against `θ0`. The unconditional
//! expectation of this LR is exactly 1 for Poisson counts at the boundary;
//! binomial counts are less dispersed than Poisson counts of the same mean
//! (convex order), which keeps it at most 1.
//!
//! ## Breach: a CUSUM e-detector
//!
//! For each breach alternative `r_k` (a fixed grid, [`UP`]) we keep
//! `L_k = max(0, L_k + ln LR_k)` (Page's CUSUM). `L_k >= h` means that for
//! some start tick `j` the product of the LRs since `j` is at least `e^h`.
//! By Ville's inequality each of those products crosses `e^h` with
//! probability at most `e^-h` under "inside", so over `K` alternatives,
//! `G` gates and `N` ticks of a rollout the chance of any false breach is at
//! most `K G N e^-h`. With `h = ln(K G N / alpha)` the false-breach rate of a
//! whole rollout checked every tick is at most `alpha`, however long it
//! runs. The restart at 0 is what lets a fault that starts late (a slow leak
//! after six healthy hours) be found as fast as one that starts at once:
//! healthy evidence does not pile up against it.
//!
//! ## Inside: a mixture e-process over the phase
//!
//! For the inside alternatives ([`DOWN`]) the log-LRs are summed over the
//! phase (no restart) and averaged as likelihood ratios,
//! `E = mean_k exp(S_k)`; a mixture of e-processes is one, so `E >= 1/a`
//! (with `a = gates.alpha_inside`) shows V2 inside at any tick with error at
//! most `a`. The sum starts again at every phase and after every breach, so
//! a step-up always rests on the phase's own data and a recovery on data
//! after the fault.
//!
//! ## Confidence sequence
//!
//! The interval shown beside an estimate is `{p : E_up(p) < 1/a and
//! E_down(p) < 1/a}` over the phase's cumulative counts: each end is a
//! one-sided bound at level `a` (together they cover at `1 - 2a`), so "the
//! upper end is below the limit" is exactly "shown inside". It is
//! anytime-valid as well, so it can be read at every tick.
//!
//! ## Assumptions
//!
//! Requests are independent given the tick's rates. Users who retry cluster
//! errors; `gates.dispersion = d` treats every count as `1/d` of a trial
//! (the LRs are raised to `1/d`, a quasi-likelihood: `E[LR^(1/d)] <=
//! E[LR]^(1/d)` keeps validity and absorbs a variance inflation up to `d`).
//! A `Share` whose `p0` comes from V1's window (the 5xx margin over V1, the
//! latency median against V1's) treats V1's estimate as known: V1 carries
//! the larger share of traffic below 50 %, and the margins are what absorbs
//! its noise.

use serde::{Deserialize, Serialize};

/// Breach alternatives, as multiples of the null (`q = r p0`, `λ = r m`).
pub(super) const UP: [f64; 6] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0];
/// Inside alternatives.
pub(super) const DOWN: [f64; 6] = [0.02, 0.1, 0.3, 0.5, 0.7, 0.85];

/// Which direction of a Ratio is harm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Harm {
    /// More V2 events per exposure is worse (JS errors).
    Higher,
    /// Fewer is worse (conversions).
    Lower,
}

/// What one tick adds to a gate's evidence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Counts {
    /// V2's bad share against `p0`. `bad` counts the trials surely bad and
    /// `bad_inside` those possibly bad (a histogram bucket straddling a
    /// latency limit): breach evidence uses the first, inside evidence the
    /// second, so bucket rounding never helps either verdict.
    Share {
        n: u64,
        bad: u64,
        bad_inside: u64,
        p0: f64,
    },
    /// V2's rate of events per exposure against `m` times V1's. With
    /// `floor > 0` (harm `Higher` only) a V2 rate below `floor` is never
    /// harm: when neither variant has events, their ratio is unknowable,
    /// yet "fewer than 1 user in 1,000 with a JS error" is inside.
    Ratio {
        x1: u64,
        n1: f64,
        x2: u64,
        n2: f64,
        m: f64,
        harm: Harm,
        floor: f64,
    },
}

impl Counts {
    /// A ratio with `n1`, `n2` added to its exposures (the phase's so far);
    /// a share as it is.
    pub(super) fn with_exposure_added(&self, n1: f64, n2: f64) -> Counts {
        let mut c = *self;
        if let Counts::Ratio { n1: e1, n2: e2, .. } = &mut c {
            *e1 += n1;
            *e2 += n2;
        }
        c
    }

    /// A share with exact counts.
    pub(crate) fn share(n: u64, bad: u64, p0: f64) -> Counts {
        Counts::Share {
            n,
            bad,
            bad_inside: bad,
            p0,
        }
    }
}

/// `ln LR` of `bad` in `n` at `q` against `p0`.
fn share_llr(n: f64, bad: f64, p0: f64, q: f64) -> f64 {
    let mut l = (n - bad) * ((1.0 - q) / (1.0 - p0)).ln();
    if bad > 0.0 {
        l += bad * (q / p0).ln();
    }
    l
}

/// V2's share of events at rate ratio `lambda` with exposure share `rho`.
fn theta(rho: f64, lambda: f64) -> f64 {
    rho * lambda / (rho * lambda + 1.0 - rho)
}

/// Clamps an alternative share into (0, 1).
fn open(q: f64) -> f64 {
    q.clamp(1e-12, 1.0 - 1e-9)
}

/// The log-LRs of one tick for a grid of alternatives; `breach` picks the
/// harmful side. `None` when the tick says nothing (no trials, no events).
pub(super) fn tick_llrs(c: &Counts, grid: &[f64; 6], dispersion: f64) -> Option<[f64; 6]> {
    let mut out = [0.0; 6];
    match *c {
        Counts::Share {
            n,
            bad,
            bad_inside,
            p0,
        } => {
            if n == 0 || !(p0 > 0.0 && p0 < 1.0) {
                return None;
            }
            for (o, r) in out.iter_mut().zip(grid) {
                // Breach alternatives (r > 1) read the sure count, inside
                // ones the possible count.
                let b = if *r > 1.0 { bad } else { bad_inside };
                *o = share_llr(n as f64, b as f64, p0, open(p0 * r)) / dispersion;
            }
        }
        Counts::Ratio {
            x1,
            n1,
            x2,
            n2,
            m,
            harm,
            ..
        } => {
            if n1 <= 0.0 || n2 <= 0.0 || x1 + x2 == 0 || m <= 0.0 {
                return None;
            }
            let rho = n2 / (n1 + n2);
            let t0 = theta(rho, m);
            let k = (x1 + x2) as f64;
            for (o, r) in out.iter_mut().zip(grid) {
                // For a "lower is harm" ratio the harmful side is r < 1:
                // mirror the grid so UP always means harm.
                let r = match harm {
                    Harm::Higher => *r,
                    Harm::Lower => 1.0 / r,
                };
                let t = open(theta(rho, m * r));
                *o = share_llr(k, x2 as f64, t0, t) / dispersion;
            }
        }
    }
    Some(out)
}

/// `ln(mean_k exp(l_k))`, computed without overflow.
pub(super) fn log_mean_exp(l: &[f64]) -> f64 {
    let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = l.iter().map(|x| (x - max).exp()).sum();
    max + (sum / l.len() as f64).ln()
}

/// The breach threshold `h = ln(K G N / alpha)` (module doc).
pub(super) fn breach_threshold(gates: usize, looks: u64, alpha: f64) -> f64 {
    ((UP.len() * gates.max(1)) as f64 * looks.max(1) as f64 / alpha).ln()
}

/// The anytime-valid interval of a bad share from cumulative `bad` of `n`,
/// at level `a` (module doc); `None` without trials.
pub(crate) fn share_interval(n: u64, bad: u64, a: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (n, b) = (n as f64, bad as f64);
    let limit = (1.0 / a).ln();
    // E_up(p): evidence that the share is above p; E_down(p): below.
    let up = |p: f64| log_mean_exp(&UP.map(|r| share_llr(n, b, p, open(p * r))));
    let down = |p: f64| log_mean_exp(&DOWN.map(|r| share_llr(n, b, p, open(p * r))));
    let est = (b / n).clamp(1e-9, 1.0 - 1e-9);
    // Below the estimate, "above p" grows as p falls; above it, "below p"
    // grows as p rises: bisect each side in log space.
    let lo = boundary(1e-9, est, true, |p| up(p) >= limit);
    let hi = boundary(est, 1.0 - 1e-9, false, |p| down(p) >= limit);
    Some((if b == 0.0 { 0.0 } else { lo }, hi))
}

/// The anytime-valid interval of V2's rate over V1's from cumulative counts.
pub(crate) fn ratio_interval(x1: u64, n1: f64, x2: u64, n2: f64, a: f64) -> Option<(f64, f64)> {
    if n1 <= 0.0 || n2 <= 0.0 || x1 + x2 == 0 {
        return None;
    }
    let rho = n2 / (n1 + n2);
    let (k, x) = ((x1 + x2) as f64, x2 as f64);
    let limit = (1.0 / a).ln();
    let e = |lambda: f64, grid: &[f64; 6]| {
        let t0 = open(theta(rho, lambda));
        log_mean_exp(&grid.map(|r| share_llr(k, x, t0, open(theta(rho, lambda * r)))))
    };
    let est = ((x / n2) / ((x1 as f64).max(0.5) / n1)).clamp(1e-6, 1e6);
    let lo = boundary(1e-6, est, true, |l| e(l, &UP) >= limit);
    let hi = boundary(est, 1e6, false, |l| e(l, &DOWN) >= limit);
    Some((
        if x2 == 0 { 0.0 } else { lo },
        if x1 == 0 { f64::INFINITY } else { hi },
    ))
}

/// Where `rejected` flips in [lo, hi], by bisection on the log scale:
/// `below` means values under the point are rejected (the lower end of an
/// interval), else values over it (the upper end). An end that is not
/// rejected at all is returned as it is.
fn boundary(lo: f64, hi: f64, below: bool, rejected: impl Fn(f64) -> bool) -> f64 {
    let edge = if below { lo } else { hi };
    if !rejected(edge) {
        return edge;
    }
    let (mut a, mut b) = (lo.ln(), hi.ln());
    for _ in 0..60 {
        let mid = (a + b) / 2.0;
        if rejected(mid.exp()) == below {
            a = mid;
        } else {
            b = mid;
        }
    }
    if below {
        b.exp()
    } else {
        a.exp()
    }
}
