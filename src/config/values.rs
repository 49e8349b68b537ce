//! Value types and checks that several sections share.

use std::time::Duration;

use http::HeaderName;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{invalid, Invalid};

/// A duration written as a string: "250ms", "15s", "6h", "1h 30m".
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e} (use e.g. \"15s\", \"6h\")"
            ))
        })
    }
}

impl From<Duration> for Dur {
    fn from(d: Duration) -> Self {
        Dur(d)
    }
}

/// Declares each default of a section as a named constant, and the function
/// serde's `default = "..."` calls for it (serde takes a function, not a
/// constant). The function turns the constant into the field's file type with
/// `Into`: `&str` into `String` or `PathBuf`, `Duration` into [`Dur`].
macro_rules! defaults {
    ($(
        $(#[$doc:meta])*
        $vis:vis const $name:ident: $ty:ty = $value:expr => fn $default:ident() -> $file:ty;
    )*) => {$(
        $(#[$doc])*
        $vis const $name: $ty = $value;
        fn $default() -> $file {
            $name.into()
        }
    )*};
}
pub(super) use defaults;

/// A label name (see [`label_name`]) that no earlier entry of its list uses.
pub(super) fn unique_label<'a>(
    key: &str,
    name: &str,
    mut earlier: impl Iterator<Item = &'a str>,
) -> Result<(), Invalid> {
    label_name(key, name)?;
    if earlier.any(|n| n == name) {
        return Err(invalid(key, format!("{name:?} is used twice")));
    }
    Ok(())
}

/// A header name as written in the file, in any case.
pub(super) fn header_name(key: &str, h: &str) -> Result<HeaderName, Invalid> {
    HeaderName::try_from(h.to_ascii_lowercase())
        .map_err(|_| invalid(key, format!("{h:?} is not a header name")))
}

/// A section the file leaves out reads as an empty one, so every key takes
/// the default its serde attribute names (written once, there).
pub(super) fn empty_section<T: DeserializeOwned>() -> T {
    toml::from_str("").expect("every key of a section that may be left out has a default")
}

/// Serde default of the switches that are on unless turned off.
pub(super) fn yes() -> bool {
    true
}

/// `v` when `ok`, else the error that says what `v` must be.
pub(super) fn must_be(key: &str, v: f64, ok: bool, what: &str) -> Result<f64, Invalid> {
    if ok {
        Ok(v)
    } else {
        Err(invalid(key, format!("{v} must be {what}")))
    }
}

pub(super) fn fraction(key: &str, v: f64) -> Result<f64, Invalid> {
    let ok = (0.0..=1.0).contains(&v);
    must_be(key, v, ok, "a fraction between 0 and 1")
}

pub(super) fn positive_ms(key: &str, v: f64) -> Result<f64, Invalid> {
    let ok = v.is_finite() && v > 0.0;
    must_be(key, v, ok, "a positive number of milliseconds")
}

pub(super) fn label_name(key: &str, s: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{s:?} must be 1-64 characters of a-z, 0-9, '_' or '-'"),
        ))
    }
}
