//! The overnight hold: a promotion window with hours opens only on business
//! days (configured weekdays minus holidays). Outside it the rollout holds
//! at its weight and is re-evaluated when the window next opens, 09:00 on
//! the next business day in the seed plans; meanwhile the operators' own
//! weight changes are frozen too, unless forced, so nobody steps a canary up
//! at night by hand. A rollback is never frozen.
//!
//! "Local" is the controller's process time zone (`TZ`, else the host's),
//! read with the tick's clock; the pure core only ever sees the resulting
//! wall-clock date and time, so the tests drive it with any calendar.

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};

use crate::config::{BusinessCalendar, PromotionWindow};

/// How far ahead a next opening is looked for: a calendar whose holidays
/// cover more than this never opens, and says so.
const LOOKAHEAD_DAYS: i64 = 400;

/// The window and the calendar it opens on.
pub(crate) struct Opening<'a> {
    pub(crate) window: &'a PromotionWindow,
    pub(crate) days: &'a BusinessCalendar,
}

impl Opening<'_> {
    /// The date whose window `t` falls in, if any (a window spanning
    /// midnight belongs to the day it opened on).
    fn window_date(&self, t: NaiveDateTime) -> Option<NaiveDate> {
        match *self.window {
            PromotionWindow::Always => Some(t.date()),
            PromotionWindow::Hours { start, end } if start <= end => {
                (t.time() >= start && t.time() < end).then_some(t.date())
            }
            PromotionWindow::Hours { start, end } => {
                if t.time() >= start {
                    Some(t.date())
                } else if t.time() < end {
                    t.date().pred_opt()
                } else {
                    None
                }
            }
        }
    }

    /// Whether step-ups may happen at local time `t`.
    pub(crate) fn is_open(&self, t: NaiveDateTime) -> bool {
        match self.window {
            PromotionWindow::Always => true,
            PromotionWindow::Hours { .. } => self
                .window_date(t)
                .is_some_and(|d| self.days.is_business_day(d)),
        }
    }

    /// When the overnight freeze at `t` ends: the next business day's window
    /// start. `None` when the window is open (no freeze) or never opens again
    /// within the look-ahead (see [`Freeze::Indefinite`]).
    pub(crate) fn freeze(&self, t: NaiveDateTime) -> Freeze {
        let PromotionWindow::Hours { start, .. } = *self.window else {
            return Freeze::Open;
        };
        if self.is_open(t) {
            return Freeze::Open;
        }
        let first = if t.time() < start {
            t.date()
        } else {
            t.date() + TimeDelta::days(1)
        };
        (0..LOOKAHEAD_DAYS)
            .map(|i| first + TimeDelta::days(i))
            .find(|d| self.days.is_business_day(*d))
            .map_or(Freeze::Indefinite, |d| Freeze::Until(d.and_time(start)))
    }
}

/// The overnight freeze at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Freeze {
    /// Inside the window (or no window): nothing frozen.
    Open,
    /// Frozen until this local time.
    Until(NaiveDateTime),
    /// Frozen, and no business day within the look-ahead.
    Indefinite,
}

impl Freeze {
    /// "Tue 2026-12-29 09:00 local", as holds and refusals print it.
    pub fn until_text(&self) -> Option<String> {
        match self {
            Freeze::Open => None,
            Freeze::Until(t) => Some(format!("{} local", t.format("%a %Y-%m-%d %H:%M"))),
            Freeze::Indefinite => Some(format!(
                "further notice (no business day in the next {LOOKAHEAD_DAYS} days)"
            )),
        }
    }
}
