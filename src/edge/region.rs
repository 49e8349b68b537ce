//! Which region a request comes from, for split skew per region.

use http::{HeaderMap, HeaderName};

use crate::config::RoutingConfig;

/// The region header and its labels, read on the request path.
pub(crate) struct Regions {
    header: Option<HeaderName>,
    /// The configured regions then `other`, or just `all` without a header.
    labels: Vec<String>,
}

impl Regions {
    pub(crate) fn new(cfg: &RoutingConfig) -> Self {
        Self {
            header: cfg.region_header.clone(),
            labels: cfg.region_labels.clone(),
        }
    }

    /// Region index of a request (allocation-free: a case-insensitive scan
    /// over a handful of labels beats hashing).
    #[inline]
    pub(crate) fn of(&self, headers: &HeaderMap) -> usize {
        let Some(h) = &self.header else {
            return 0;
        };
        let other = self.labels.len() - 1;
        let Some(v) = headers.get(h) else {
            return other;
        };
        let v = v.as_bytes().trim_ascii();
        self.labels[..other]
            .iter()
            .position(|r| r.as_bytes().eq_ignore_ascii_case(v))
            .unwrap_or(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(header: Option<&str>, labels: &[&str]) -> Regions {
        Regions {
            header: header.map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap()),
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_request_is_in_its_region_or_other() {
        let r = regions(Some("x-region"), &["eu", "us", "other"]);
        let mut h = HeaderMap::new();
        assert_eq!(r.of(&h), 2, "no header: other");
        h.insert("x-region", " EU ".parse().unwrap());
        assert_eq!(r.of(&h), 0, "trimmed, case-insensitive");
        h.insert("x-region", "us".parse().unwrap());
        assert_eq!(r.of(&h), 1);
        h.insert("x-region", "mars".parse().unwrap());
        assert_eq!(r.of(&h), 2, "unknown: other");
        let all = regions(None, &["all"]);
        assert_eq!(
            all.of(&h),
            0,
            "without a region header everyone is in `all`"
        );
    }
}
