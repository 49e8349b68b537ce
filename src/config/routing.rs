//! `[routing]`: stickiness, the variant headers, and the regions split skew is
//! counted by.

use http::HeaderName;
use serde::Deserialize;

use super::values::{defaults, header_name, label_name, yes};
use super::{invalid, Invalid};

defaults! {
    const DEFAULT_SALT: &str = "rollgate" => fn default_salt() -> String;
}
/// Bounds the region label set.
const MAX_REGIONS: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRouting {
    pub sticky_header: Option<String>,
    pub sticky_cookie: Option<String>,
    #[serde(default = "yes")]
    pub expose_variant_header: bool,
    #[serde(default)]
    pub allow_override_header: bool,
    #[serde(default = "default_salt")]
    pub salt: String,
    /// HMAC key of `rg_bucket`; generated and kept in `state_dir` when absent.
    pub cookie_secret: Option<String>,
    /// Request header naming the client's region (split skew per region).
    pub region_header: Option<String>,
    /// The region values counted separately; any other value is `other`.
    #[serde(default)]
    pub regions: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub sticky_header: Option<HeaderName>,
    pub sticky_cookie: Option<String>,
    pub expose_variant_header: bool,
    pub allow_override_header: bool,
    pub salt: String,
    pub cookie_secret: Option<Vec<u8>>,
    pub region_header: Option<HeaderName>,
    /// Region labels: the configured regions then `other`, or just `all`
    /// without a region header. A request's region is an index into this.
    pub region_labels: Vec<String>,
}

pub(super) fn validate(r: FileRouting) -> Result<RoutingConfig, Invalid> {
    let sticky_header = r
        .sticky_header
        .filter(|h| !h.is_empty())
        .map(|h| header_name("routing.sticky_header", &h))
        .transpose()?;
    if r.salt.is_empty() {
        return Err(invalid("routing.salt", "must not be empty"));
    }
    let cookie_secret = match r.cookie_secret {
        Some(s) if s.len() < 16 => {
            return Err(invalid(
                "routing.cookie_secret",
                "must be at least 16 characters",
            ))
        }
        other => other.map(String::into_bytes),
    };
    let region_header = r
        .region_header
        .filter(|h| !h.is_empty())
        .map(|h| header_name("routing.region_header", &h))
        .transpose()?;
    if r.regions.len() > MAX_REGIONS {
        return Err(invalid(
            "routing.regions",
            format!("at most {MAX_REGIONS} regions (they are labels)"),
        ));
    }
    let mut region_labels = Vec::new();
    for (i, reg) in r.regions.iter().enumerate() {
        let key = format!("routing.regions[{i}]");
        label_name(&key, &reg.to_ascii_lowercase())?;
        let reg = reg.to_ascii_lowercase();
        if reg == "other" || region_labels.contains(&reg) {
            return Err(invalid(key, format!("{reg:?} is reserved or used twice")));
        }
        region_labels.push(reg);
    }
    match (&region_header, region_labels.is_empty()) {
        (Some(_), _) => region_labels.push("other".into()),
        (None, true) => region_labels.push("all".into()),
        (None, false) => {
            return Err(invalid(
                "routing.regions",
                "regions need `routing.region_header` to be read from",
            ))
        }
    }
    Ok(RoutingConfig {
        sticky_header,
        sticky_cookie: r.sticky_cookie.filter(|c| !c.is_empty()),
        expose_variant_header: r.expose_variant_header,
        allow_override_header: r.allow_override_header,
        salt: r.salt,
        cookie_secret,
        region_header,
        region_labels,
    })
}
