//! `POST /_rollgate/beacon`: client events (JS errors, funnel steps, timings)
//! counted at the edge, attributed to the variant the sticky key routes to.
//!
//! The body is a JSON array of `{"type": "js_error"|"funnel"|"timing"|"revenue",
//! "name": "...", "value": n}` (other keys are ignored). It is parsed in one
//! pass by a serde visitor straight into a fixed array on the stack: keys,
//! types and names are matched as borrowed `&str` while parsing and become an
//! enum and an index into the configured names, so an event costs no
//! allocation. A batch is all or nothing: it is validated completely before
//! the first event is recorded, and the first problem found names the reject
//! reason.
//!
//! Limits: body <= [`MAX_BODY`] bytes, <= [`MAX_EVENTS`] events, names from
//! `[beacons] names`. Every refusal of bad input is `400` with the reason
//! label as body (`not_json`, `too_large`, `too_many`, `unknown_name`,
//! `unknown_type`, `bad_value`), counted in
//! `rollgate_beacon_rejected_total{reason}`. An over-limit body is a 400
//! `too_large` as well (not 413): every bad input gets a 400 with its reason,
//! and one status keeps clients simple.
//!
//! A good batch from a client address or sticky key that is at its
//! per-window cap (`beacons.max_events_per_client`, `max_events_per_key`),
//! or with a key past its address's `max_users_per_client`, is refused whole with `429` and `rate_limited` (same counter, seventh
//! reason): the input is fine and the same batch would be taken in the next
//! window, which is what 429 tells a client (with `Retry-After`), where a
//! 400 would say "never send this again".
//! `timing` values are milliseconds (finite, 0 ..= [`MAX_TIMING_MS`]); a value
//! on `js_error` and `funnel` is optional, checked the same way and not used.
//! A `revenue` event needs its value, an amount in the currency's minor unit
//! (cents), finite, 0 ..= `beacons.max_revenue_value`, rounded to a whole
//! unit; anything else is `bad_value`. The cap bounds what one forged event
//! can add to a variant's revenue (the per-key event cap bounds how many).

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::config::BeaconsConfig;
use crate::routing::Variant;
use crate::telemetry::beacons::{BeaconCells, BeaconReject, BeaconType, Sender};

pub const BEACON_PATH: &str = "/_rollgate/beacon";
/// Largest accepted body.
pub const MAX_BODY: usize = 64 * 1024;
/// Most events in one batch.
pub const MAX_EVENTS: usize = 100;
/// Largest accepted timing value (one hour).
pub const MAX_TIMING_MS: f64 = 3_600_000.0;

/// One validated event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Index into the configured names.
    pub name: u16,
    pub kind: BeaconType,
    /// `timing`: microseconds; `revenue`: minor currency units; else 0.
    pub value: u64,
}

const NO_EVENT: Event = Event {
    name: 0,
    kind: BeaconType::Funnel,
    value: 0,
};

/// A parsed batch, on the stack.
pub struct Batch {
    events: [Event; MAX_EVENTS],
    len: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            events: [NO_EVENT; MAX_EVENTS],
            len: 0,
        }
    }
}

impl Batch {
    pub fn events(&self) -> &[Event] {
        &self.events[..self.len]
    }

    /// Records every event for `variant` (counts only).
    #[inline]
    pub fn record(&self, cells: &BeaconCells, variant: Variant) {
        for e in self.events() {
            cells.record(e.name, variant, e.kind, e.value);
        }
    }

    /// Records every event for `variant` and, unless the sender opted out,
    /// the sender's key as a user of each name it sent.
    #[inline]
    pub fn record_from(&self, cells: &BeaconCells, variant: Variant, from: &Sender) {
        self.record(cells, variant);
        if !from.opted_out {
            for e in self.events() {
                cells.record_user(e.name, variant, e.kind, from.user);
            }
        }
    }
}

/// Parses and validates a body into `out` (cleared first).
pub fn parse(body: &[u8], names: &BeaconsConfig, out: &mut Batch) -> Result<(), BeaconReject> {
    out.len = 0;
    if body.len() > MAX_BODY {
        return Err(BeaconReject::TooLarge);
    }
    let mut reject = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = BatchSeed {
        names,
        out: &mut *out,
        reject: &mut reject,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    let result = match (parsed, reject) {
        (_, Some(r)) => Err(r),
        (Ok(()), None) => Ok(()),
        (Err(_), None) => Err(BeaconReject::NotJson),
    };
    if result.is_err() {
        out.len = 0;
    }
    result
}

/// Stops the parse; the reason is in the seed's `reject` slot. Only on the
/// rejection path, so the error's allocation is not a per-event cost.
fn stop<E: de::Error>(slot: &mut Option<BeaconReject>, why: BeaconReject) -> E {
    *slot = Some(why);
    E::custom(why.label())
}

struct BatchSeed<'a> {
    names: &'a BeaconsConfig,
    out: &'a mut Batch,
    reject: &'a mut Option<BeaconReject>,
}

impl<'de> DeserializeSeed<'de> for BatchSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of beacon events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            if self.out.len == MAX_EVENTS {
                return match seq.next_element::<IgnoredAny>()? {
                    Some(_) => Err(stop(self.reject, BeaconReject::TooMany)),
                    None => Ok(()),
                };
            }
            let seed = EventSeed {
                names: self.names,
                reject: &mut *self.reject,
            };
            match seq.next_element_seed(seed)? {
                Some(e) => {
                    self.out.events[self.out.len] = e;
                    self.out.len += 1;
                }
                None => return Ok(()),
            }
        }
    }
}

struct EventSeed<'a> {
    names: &'a BeaconsConfig,
    reject: &'a mut Option<BeaconReject>,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Event;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Event, D::Error> {
        d.deserialize_map(self)
    }
}

/// A field of an event object.
enum Key {
    Type,
    Name,
    Value,
    Other,
}

/// What a `value` field held.
#[derive(Clone, Copy)]
enum Num {
    Absent,
    Number(f64),
    NotANumber,
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a beacon event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        // `Some(None)`: present but not a known type / configured name.
        let (mut kind, mut name, mut value) = (None, None, Num::Absent);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Type => kind = Some(map.next_value_seed(StrSeed(BeaconType::parse))?),
                Key::Name => {
                    let names = self.names;
                    name = Some(map.next_value_seed(StrSeed(|s: &str| names.index(s)))?);
                }
                Key::Value => value = map.next_value_seed(NumSeed)?,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(Some(kind)) = kind else {
            return Err(stop(self.reject, BeaconReject::UnknownType));
        };
        let Some(Some(name)) = name else {
            return Err(stop(self.reject, BeaconReject::UnknownName));
        };
        let within = |v: f64, max: f64| v.is_finite() && (0.0..=max).contains(&v);
        let ok = |v: f64| within(v, MAX_TIMING_MS);
        let max_revenue = self.names.max_revenue_value as f64;
        let value = match (kind, value) {
            (BeaconType::Timing, Num::Number(v)) if ok(v) => (v * 1000.0).round() as u64,
            (BeaconType::Revenue, Num::Number(v)) if within(v, max_revenue) => v.round() as u64,
            (BeaconType::Timing | BeaconType::Revenue, _) => {
                return Err(stop(self.reject, BeaconReject::BadValue))
            }
            (BeaconType::JsError | BeaconType::Funnel, Num::Absent) => 0,
            (BeaconType::JsError | BeaconType::Funnel, Num::Number(v)) if ok(v) => 0,
            (BeaconType::JsError | BeaconType::Funnel, _) => {
                return Err(stop(self.reject, BeaconReject::BadValue))
            }
        };
        Ok(Event { name, kind, value })
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        Ok(match s {
            "type" => Key::Type,
            "name" => Key::Name,
            "value" => Key::Value,
            _ => Key::Other,
        })
    }
}

/// A string field mapped while it is borrowed; any non-string is `None`.
struct StrSeed<F>(F);

impl<'de, T, F: FnOnce(&str) -> Option<T>> DeserializeSeed<'de> for StrSeed<F> {
    type Value = Option<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T, F: FnOnce(&str) -> Option<T>> Visitor<'de> for StrSeed<F> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<T>, E> {
        Ok((self.0)(s))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

struct NumSeed;

impl<'de> DeserializeSeed<'de> for NumSeed {
    type Value = Num;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Num, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NumSeed {
    type Value = Num;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
        Ok(Num::Number(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
        Ok(Num::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
        Ok(Num::Number(v as f64))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
        Ok(Num::Absent)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Num, E> {
        Ok(Num::NotANumber)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Num, E> {
        Ok(Num::NotANumber)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Num::NotANumber)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Num::NotANumber)
    }
}

/// `Sec-GPC: 1` or `DNT: 1`: the client asked not to be tracked.
pub fn opted_out(headers: &http::HeaderMap) -> bool {
    // Called on every proxied request: typed names skip parsing a `&str`
    // into a header name on each look-up.
    static SEC_GPC: http::HeaderName = http::HeaderName::from_static("sec-gpc");
    [&SEC_GPC, &http::header::DNT].into_iter().any(|h| {
        headers
            .get(h)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> BeaconsConfig {
        BeaconsConfig {
            names: [
                "page_view",
                "js_error",
                "first_result_ms",
                "search_result_click",
                "credits_bought",
            ]
            .map(String::from)
            .to_vec(),
            max_revenue_value: 100_000,
            ..Default::default()
        }
    }

    fn run(body: &str) -> Result<Vec<Event>, BeaconReject> {
        let mut b = Batch::default();
        parse(body.as_bytes(), &names(), &mut b).map(|()| b.events().to_vec())
    }

    #[test]
    fn a_good_batch_parses_into_indices() {
        let got = run(r#"[
            {"type": "funnel", "name": "page_view"},
            {"type": "js_error", "name": "js_error", "message": "ignored", "extra": [1, {"a": 2}]},
            {"type": "timing", "name": "first_result_ms", "value": 312.5},
            {"name": "search_result_click", "type": "funnel", "value": null}
        ]"#)
        .unwrap();
        assert_eq!(
            got,
            vec![
                Event {
                    name: 0,
                    kind: BeaconType::Funnel,
                    value: 0
                },
                Event {
                    name: 1,
                    kind: BeaconType::JsError,
                    value: 0
                },
                Event {
                    name: 2,
                    kind: BeaconType::Timing,
                    value: 312_500
                },
                Event {
                    name: 3,
                    kind: BeaconType::Funnel,
                    value: 0
                },
            ]
        );
        assert_eq!(run("[]").unwrap(), vec![]);
        // Escapes in keys and values are fine (no borrow, still no allocation of ours).
        let got = run(r#"[{"typ\u0065": "funnel", "name": "page\u005fview"}]"#).unwrap();
        assert_eq!(got[0].name, 0);
    }

    #[test]
    fn each_bad_input_has_its_reason() {
        use BeaconReject::*;
        let cases: &[(&str, BeaconReject)] = &[
            ("", NotJson),
            ("not json", NotJson),
            ("{\"type\": \"funnel\"}", NotJson),
            ("[1, 2]", NotJson),
            (r#"[{"type": "funnel", "name": "page_view"}"#, NotJson),
            (r#"[{"type": "funnel", "name": "page_view"}] x"#, NotJson),
            (r#"[{"type": "click", "name": "page_view"}]"#, UnknownType),
            (r#"[{"type": 3, "name": "page_view"}]"#, UnknownType),
            (r#"[{"name": "page_view"}]"#, UnknownType),
            (
                r#"[{"type": "funnel", "name": "user@example.com"}]"#,
                UnknownName,
            ),
            (r#"[{"type": "funnel"}]"#, UnknownName),
            (
                r#"[{"type": "funnel", "name": ["page_view"]}]"#,
                UnknownName,
            ),
            (
                r#"[{"type": "timing", "name": "first_result_ms"}]"#,
                BadValue,
            ),
            (
                r#"[{"type": "timing", "name": "first_result_ms", "value": "12"}]"#,
                BadValue,
            ),
            (
                r#"[{"type": "timing", "name": "first_result_ms", "value": -1}]"#,
                BadValue,
            ),
            (
                r#"[{"type": "timing", "name": "first_result_ms", "value": 1e300}]"#,
                BadValue,
            ),
            (
                r#"[{"type": "funnel", "name": "page_view", "value": true}]"#,
                BadValue,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(run(body), Err(*want), "{body}");
        }
        let one = r#"{"type":"funnel","name":"page_view"}"#;
        let batch = |n: usize| format!("[{}]", vec![one; n].join(","));
        assert_eq!(run(&batch(100)).unwrap().len(), 100);
        assert_eq!(run(&batch(101)), Err(TooMany));
        let big = format!("[{}{}]", one, " ".repeat(MAX_BODY));
        assert_eq!(run(&big), Err(TooLarge));
        // The first problem wins; nothing of a rejected batch is kept.
        let mut b = Batch::default();
        let body = format!("[{one}, {{\"type\": \"nope\", \"name\": \"x\"}}]");
        assert_eq!(parse(body.as_bytes(), &names(), &mut b), Err(UnknownType));
    }

    #[test]
    fn revenue_needs_a_value_within_the_cap() {
        let got = run(r#"[
            {"type": "revenue", "name": "credits_bought", "value": 1250},
            {"type": "revenue", "name": "credits_bought", "value": 99.6},
            {"type": "revenue", "name": "credits_bought", "value": 0},
            {"type": "revenue", "name": "credits_bought", "value": 100000}
        ]"#)
        .unwrap();
        let values: Vec<u64> = got.iter().map(|e| e.value).collect();
        assert_eq!(values, [1250, 100, 0, 100_000]);
        assert!(got
            .iter()
            .all(|e| e.kind == BeaconType::Revenue && e.name == 4));
        for bad in [
            r#"[{"type": "revenue", "name": "credits_bought"}]"#,
            r#"[{"type": "revenue", "name": "credits_bought", "value": null}]"#,
            r#"[{"type": "revenue", "name": "credits_bought", "value": -1}]"#,
            r#"[{"type": "revenue", "name": "credits_bought", "value": 100001}]"#,
            r#"[{"type": "revenue", "name": "credits_bought", "value": 1e300}]"#,
            r#"[{"type": "revenue", "name": "credits_bought", "value": "12.50"}]"#,
        ] {
            assert_eq!(run(bad), Err(BeaconReject::BadValue), "{bad}");
        }
        // The name must still be configured.
        let unknown = r#"[{"type": "revenue", "name": "tips", "value": 1}]"#;
        assert_eq!(run(unknown), Err(BeaconReject::UnknownName));
    }

    #[test]
    fn opt_out_headers() {
        let mut h = http::HeaderMap::new();
        assert!(!opted_out(&h));
        h.insert("dnt", http::HeaderValue::from_static("0"));
        assert!(!opted_out(&h));
        h.insert("sec-gpc", http::HeaderValue::from_static("1"));
        assert!(opted_out(&h));
    }
}
