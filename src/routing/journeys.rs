//! Journey classification: request -> `JourneyId`, first match wins.
//!
//! Compiled once from config into a list of matchers over borrowed path
//! segments, so classifying a request allocates nothing. The journey count is
//! fixed by config (plus `other`), which bounds metric label cardinality no
//! matter what paths clients send.

use http::Method;

/// Index of a journey in the configured list; the last index is `other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JourneyId(u16);

impl JourneyId {
    pub const fn new(i: u16) -> Self {
        JourneyId(i)
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a journey's requests are, for the gates that only apply to some.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JourneyKind {
    #[default]
    Normal,
    /// Its 5xx and upstream failures count as failed payments.
    Payment,
}

/// How a journey matches a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The path equals the prefix or continues it after a `/` (segment boundary):
    /// `/api/pay` matches `/api/pay` and `/api/pay/1`, not `/api/payments`.
    Prefix(String),
    /// Segment pattern: `*` matches exactly one segment, a final `**` any rest.
    Pattern(Vec<String>),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix(p) => {
                let p = p.trim_end_matches('/');
                path.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || p.is_empty())
            }
            PathMatch::Pattern(segs) => {
                let mut parts = path.trim_start_matches('/').split('/');
                for seg in segs {
                    if seg == "**" {
                        return true;
                    }
                    match parts.next() {
                        Some(part) if seg == "*" && !part.is_empty() => {}
                        Some(part) if part == seg => {}
                        _ => return false,
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

/// Bit per standard method; journeys with no method list match all.
pub fn method_bit(m: &Method) -> u16 {
    match *m {
        Method::GET => 1,
        Method::HEAD => 2,
        Method::POST => 4,
        Method::PUT => 8,
        Method::DELETE => 16,
        Method::PATCH => 32,
        Method::OPTIONS => 64,
        Method::CONNECT => 128,
        Method::TRACE => 256,
        _ => 512,
    }
}

/// One configured journey.
#[derive(Clone, Debug, PartialEq)]
pub struct Journey {
    pub name: String,
    pub path: PathMatch,
    /// OR of `method_bit`s; 0 = any method.
    pub methods: u16,
    pub kind: JourneyKind,
}

/// The compiled classifier.
#[derive(Clone, Debug)]
pub struct Journeys {
    list: Vec<Journey>,
}

impl Journeys {
    pub const OTHER: &'static str = "other";

    pub fn new(list: Vec<Journey>) -> Self {
        Self { list }
    }

    /// Number of journeys including `other`.
    pub fn len(&self) -> usize {
        self.list.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn other(&self) -> JourneyId {
        JourneyId(self.list.len() as u16)
    }

    #[inline]
    pub fn classify(&self, method: &Method, path: &str) -> JourneyId {
        let bit = method_bit(method);
        for (i, j) in self.list.iter().enumerate() {
            if (j.methods == 0 || j.methods & bit != 0) && j.path.matches(path) {
                return JourneyId(i as u16);
            }
        }
        self.other()
    }

    pub fn name(&self, id: JourneyId) -> &str {
        self.list
            .get(id.index())
            .map_or(Self::OTHER, |j| j.name.as_str())
    }

    pub fn kind(&self, id: JourneyId) -> JourneyKind {
        self.list
            .get(id.index())
            .map_or(JourneyKind::Normal, |j| j.kind)
    }

    pub fn ids(&self) -> impl Iterator<Item = JourneyId> {
        (0..self.len() as u16).map(JourneyId)
    }

    /// Names in index order, `other` last: equal lists mean equal cell layouts.
    pub fn names(&self) -> Vec<&str> {
        self.ids().map(|id| self.name(id)).collect()
    }

    pub fn by_name(&self, name: &str) -> Option<JourneyId> {
        self.ids().find(|id| self.name(*id) == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journeys() -> Journeys {
        let j = |name: &str, path: PathMatch, methods: u16, kind| Journey {
            name: name.into(),
            path,
            methods,
            kind,
        };
        Journeys::new(vec![
            j(
                "payments",
                PathMatch::Prefix("/api/payments".into()),
                4,
                JourneyKind::Payment,
            ),
            j(
                "application_submit",
                PathMatch::Pattern(vec![
                    "api".into(),
                    "applications".into(),
                    "*".into(),
                    "submit".into(),
                ]),
                0,
                JourneyKind::Normal,
            ),
            j(
                "search",
                PathMatch::Prefix("/search".into()),
                0,
                JourneyKind::Normal,
            ),
            j(
                "static",
                PathMatch::Pattern(vec!["assets".into(), "**".into()]),
                0,
                JourneyKind::Normal,
            ),
            j(
                "api",
                PathMatch::Prefix("/api/".into()),
                0,
                JourneyKind::Normal,
            ),
        ])
    }

    #[test]
    fn first_match_wins_and_unmatched_is_other() {
        let js = journeys();
        let name = |m: Method, p: &str| js.name(js.classify(&m, p)).to_string();
        assert_eq!(name(Method::POST, "/api/payments"), "payments");
        assert_eq!(name(Method::POST, "/api/payments/42/capture"), "payments");
        // Method filter: a GET on the payments prefix falls through to `api`.
        assert_eq!(name(Method::GET, "/api/payments"), "api");
        // Segment boundary: not a prefix of a longer segment.
        assert_eq!(name(Method::POST, "/api/paymentsx"), "api");
        assert_eq!(name(Method::GET, "/search"), "search");
        assert_eq!(name(Method::GET, "/search/scholarships"), "search");
        assert_eq!(name(Method::GET, "/searching"), "other");
        assert_eq!(
            name(Method::POST, "/api/applications/7/submit"),
            "application_submit"
        );
        assert_eq!(name(Method::POST, "/api/applications//submit"), "api");
        assert_eq!(name(Method::POST, "/api/applications/7/submit/x"), "api");
        assert_eq!(name(Method::GET, "/assets/js/app.js"), "static");
        assert_eq!(name(Method::GET, "/"), "other");
        assert_eq!(
            js.kind(js.by_name("payments").unwrap()),
            JourneyKind::Payment
        );
        assert_eq!(js.len(), 6);
        assert_eq!(js.name(js.other()), "other");
    }
}
