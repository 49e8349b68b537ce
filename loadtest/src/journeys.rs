//! The simulated users: each has a sticky `x-user-id` and walks the funnel
//! search -> detail -> application start -> submit -> payment, leaving it
//! (back to search) at each step with a probability derived from the mix.

use std::str::FromStr;

use anyhow::{bail, Context};
use http::{HeaderValue, Method};

/// The journeys of the walk, in funnel order, plus `Plain` for a fixed path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journey {
    Search = 0,
    Detail = 1,
    ApplicationStart = 2,
    ApplicationSubmit = 3,
    Payment = 4,
    Plain = 5,
}

pub const JOURNEYS: usize = 6;
/// Funnel steps (all journeys but `Plain`).
pub const STEPS: usize = 5;

impl Journey {
    pub const ALL: [Journey; JOURNEYS] = [
        Journey::Search,
        Journey::Detail,
        Journey::ApplicationStart,
        Journey::ApplicationSubmit,
        Journey::Payment,
        Journey::Plain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Journey::Search => "search",
            Journey::Detail => "detail",
            Journey::ApplicationStart => "application_start",
            Journey::ApplicationSubmit => "application_submit",
            Journey::Payment => "payment",
            Journey::Plain => "plain",
        }
    }

    /// Method and path, the same walk `rollgate demo` uses, so the example
    /// config's journeys classify them.
    pub fn request(self) -> (Method, &'static str) {
        let i = self as usize;
        if i < STEPS {
            let (m, p) = &rollgate::demo::population::WALK[i];
            (m.clone(), p)
        } else {
            (Method::GET, "/")
        }
    }
}

/// Traffic shares of the five steps. Users walk a funnel, so the shares must
/// not grow along it; the continue probability after step k is
/// `share[k+1] / share[k]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    pub shares: [f64; STEPS],
}

impl Default for Mix {
    /// Many searches, few payments.
    fn default() -> Self {
        Mix {
            shares: [40.0, 30.0, 15.0, 10.0, 5.0],
        }
    }
}

impl Mix {
    /// Probability of going on to step k+1 after step k.
    pub fn continue_probabilities(&self) -> [f64; STEPS] {
        let mut p = [0.0; STEPS];
        for (k, w) in self.shares.windows(2).enumerate() {
            p[k] = if w[0] > 0.0 {
                (w[1] / w[0]).clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
        p
    }
}

impl FromStr for Mix {
    type Err = anyhow::Error;

    /// `search=40,detail=30,start=15,submit=10,payment=5` (any order; missing
    /// steps are 0), or five numbers `40,30,15,10,5`.
    fn from_str(s: &str) -> anyhow::Result<Mix> {
        let mut shares = [0.0f64; STEPS];
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.iter().all(|p| !p.contains('=')) {
            if parts.len() != STEPS {
                bail!("mix {s:?}: give five shares or name=share pairs");
            }
            for (k, p) in parts.iter().enumerate() {
                shares[k] = p.parse().with_context(|| format!("mix: bad share {p:?}"))?;
            }
        } else {
            for p in parts {
                let (name, v) = p
                    .split_once('=')
                    .with_context(|| format!("mix: {p:?} is not name=share"))?;
                let k = match name.trim() {
                    "search" => 0,
                    "detail" => 1,
                    "start" | "application_start" => 2,
                    "submit" | "application_submit" => 3,
                    "payment" | "payments" => 4,
                    other => bail!(
                        "mix: unknown step {other:?} (search, detail, start, submit, payment)"
                    ),
                };
                shares[k] = v
                    .trim()
                    .parse()
                    .with_context(|| format!("mix: bad share {v:?}"))?;
            }
        }
        if shares.iter().any(|v| !v.is_finite() || *v < 0.0) || shares[0] <= 0.0 {
            bail!("mix {s:?}: shares must be >= 0 and search > 0");
        }
        if shares.windows(2).any(|w| w[1] > w[0]) {
            bail!("mix {s:?}: users walk a funnel, so shares must not grow along search, detail, start, submit, payment");
        }
        Ok(Mix { shares })
    }
}

/// A small, fast PRNG (SplitMix64): deterministic per seed, no locking.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One user: its header value and where it is in the funnel.
#[derive(Clone, Debug)]
pub struct User {
    pub id: HeaderValue,
    pub step: u8,
}

/// The users one connection serves, round robin.
pub struct Walkers {
    users: Vec<User>,
    next: usize,
    cont: [f64; STEPS],
    rng: Rng,
    plain: bool,
}

impl Walkers {
    /// Users `u` with `u % connections == conn` out of `users` (at least one).
    pub fn for_connection(
        conn: usize,
        connections: usize,
        users: usize,
        mix: &Mix,
        plain: bool,
    ) -> Walkers {
        let users = users.max(1);
        let mut ids: Vec<usize> = (conn..users).step_by(connections.max(1)).collect();
        if ids.is_empty() {
            ids.push(conn % users);
        }
        let mut rng = Rng::new(conn as u64 + 1);
        let cont = mix.continue_probabilities();
        let users = ids
            .into_iter()
            .map(|u| User {
                id: HeaderValue::try_from(format!("user-{u}")).expect("ascii"),
                // Spread users over the funnel so the mix holds from the start.
                step: start_step(&mut rng, &cont),
            })
            .collect();
        Walkers {
            users,
            next: 0,
            cont,
            rng,
            plain,
        }
    }

    /// The next request: (journey, user id); advances that user's walk.
    pub fn next_request(&mut self) -> (Journey, HeaderValue) {
        let n = self.users.len();
        let u = &mut self.users[self.next];
        self.next = (self.next + 1) % n;
        if self.plain {
            return (Journey::Plain, u.id.clone());
        }
        let journey = Journey::ALL[u.step as usize];
        let go_on = self.rng.next_f64() < self.cont[u.step as usize];
        u.step = if go_on { u.step + 1 } else { 0 };
        (journey, u.id.clone())
    }
}

/// A step drawn from the funnel's stationary distribution.
fn start_step(rng: &mut Rng, cont: &[f64; STEPS]) -> u8 {
    let mut w = [0.0; STEPS];
    w[0] = 1.0;
    for k in 1..STEPS {
        w[k] = w[k - 1] * cont[k - 1];
    }
    let total: f64 = w.iter().sum();
    let mut x = rng.next_f64() * total;
    for (k, wk) in w.iter().enumerate() {
        if x < *wk {
            return k as u8;
        }
        x -= wk;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_walk_follows_it() {
        let mix: Mix = "search=40,detail=30,start=15,submit=10,payment=5"
            .parse()
            .unwrap();
        assert_eq!(mix, Mix::default());
        assert_eq!("40,30,15,10,5".parse::<Mix>().unwrap(), mix);
        assert!("search=10,detail=20".parse::<Mix>().is_err());
        assert!("bogus=1".parse::<Mix>().is_err());

        let mut w = Walkers::for_connection(0, 1, 100, &mix, false);
        let mut counts = [0u64; JOURNEYS];
        let n = 200_000;
        for _ in 0..n {
            counts[w.next_request().0 as usize] += 1;
        }
        for (k, count) in counts.iter().take(STEPS).enumerate() {
            let share = *count as f64 / n as f64 * 100.0;
            assert!(
                (share - mix.shares[k]).abs() < 1.0,
                "step {k}: {share:.2}% vs {}%",
                mix.shares[k]
            );
        }
    }

    #[test]
    fn users_are_split_over_connections_and_sticky() {
        let mix = Mix::default();
        let mut a = Walkers::for_connection(1, 4, 10, &mix, false);
        let ids: std::collections::BTreeSet<_> = (0..30)
            .map(|_| a.next_request().1.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            ids.into_iter().collect::<Vec<_>>(),
            ["user-1", "user-5", "user-9"]
        );
    }
}
