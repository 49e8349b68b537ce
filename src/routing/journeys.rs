//! Journey classification: request -> `JourneyId`, first match wins.
//!
//! Compiled once from config into a list of matchers over borrowed path
//! segments, so classifying a request allocates nothing. The journey count is
//! fixed by config (plus `other`), which bounds metric label cardinality no
//! matter what paths clients send.
//!
//! Matching runs on the normalised path (RFC 3986 section 6.2.2: unreserved
//! characters percent-decoded, dot segments removed, and repeated slashes
//! collapsed as most app routers do), because the app behind us routes
//! `/api//payments` and `/api/%70ayments` to its payments handler too: a
//! client must not be able to take a payment out of the payments journey (and
//! its gate and tripwire) by spelling the path differently. The path sent
//! upstream is left as the client wrote it.

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

    /// The journey of a request, judged on its normalised path.
    #[inline]
    pub fn classify(&self, method: &Method, path: &str) -> JourneyId {
        if is_normal(path.as_bytes()) {
            self.classify_normal(method, path)
        } else {
            self.classify_unusual(method, path)
        }
    }

    /// A path that needs normalising: rare (no browser or client library
    /// writes one), so it is out of line. Normalising never lengthens a
    /// path, so it is done in a 512-byte stack buffer; only a longer path
    /// takes one allocation (its `Vec`).
    #[cold]
    #[inline(never)]
    fn classify_unusual(&self, method: &Method, path: &str) -> JourneyId {
        const STACK: usize = 512;
        let mut stack = [0u8; STACK];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if path.len() <= STACK {
            &mut stack[..path.len()]
        } else {
            heap.resize(path.len(), 0);
            &mut heap
        };
        let n = normalise(path.as_bytes(), buf);
        // Only ASCII is decoded and only whole segments are dropped, at `/`
        // boundaries, so the result is UTF-8 whenever the input was.
        match std::str::from_utf8(&buf[..n]) {
            Ok(normal) => self.classify_normal(method, normal),
            Err(_) => self.classify_normal(method, path),
        }
    }

    fn classify_normal(&self, method: &Method, path: &str) -> JourneyId {
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

// === path normalisation ===

/// Whether `path` is already what [`normalise`] would make of it: no `%`, no
/// `//`, no `.` or `..` segment. Paths that do not start with `/` (`*`, an
/// empty path) are left alone. One pass, no allocation.
///
/// Every way out of normal form starts at a `%` or at a `/` followed by `/`
/// or `.`, so the loop looks only at those bytes and never tracks segments:
/// this runs on every request, and the common path has none of them.
fn is_normal(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return true;
    }
    for (i, &b) in path.iter().enumerate() {
        match b {
            b'%' => return false,
            b'/' => match path.get(i + 1) {
                Some(b'/') => return false,
                Some(b'.') if is_dots_segment(&path[i + 1..]) => return false,
                _ => {}
            },
            _ => {}
        }
    }
    true
}

/// Whether `rest` (what follows a `/`) starts with a `.` or `..` segment.
fn is_dots_segment(rest: &[u8]) -> bool {
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    is_dots(&rest[..end])
}

fn is_dots(segment: &[u8]) -> bool {
    matches!(segment, b"." | b"..")
}

/// Writes the normal form of `path` into `out` (at least `path.len()` long)
/// and returns its length: unreserved characters (`A-Z a-z 0-9 - . _ ~`)
/// percent-decoded, every other escape kept as written; then, segment by
/// segment, `.` and empty segments dropped and `..` removing the segment
/// before it (never above the root). A trailing `/` is kept, as the prefix
/// rule already treats `/api/` like `/api`.
fn normalise(path: &[u8], out: &mut [u8]) -> usize {
    if path.first() != Some(&b'/') {
        out[..path.len()].copy_from_slice(path);
        return path.len();
    }
    // Decode first, so that `%2e%2e` is a dot segment too.
    let mut n = 0;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        let decoded = (b == b'%')
            .then(|| Some((hex_digit(*path.get(i + 1)?)? << 4) | hex_digit(*path.get(i + 2)?)?))
            .flatten()
            .filter(|d| d.is_ascii_alphanumeric() || matches!(d, b'-' | b'.' | b'_' | b'~'));
        match decoded {
            Some(d) => {
                out[n] = d;
                i += 3;
            }
            None => {
                out[n] = b;
                i += 1;
            }
        }
        n += 1;
    }
    // Then the segments, in place: the write cursor never passes the read one.
    let mut w = 1;
    let mut r = 1;
    while r <= n {
        let end = out[r..n]
            .iter()
            .position(|&b| b == b'/')
            .map_or(n, |p| r + p);
        match &out[r..end] {
            b"" | b"." => {}
            b".." => {
                if w > 1 {
                    w = out[..w - 1]
                        .iter()
                        .rposition(|&b| b == b'/')
                        .map_or(1, |p| p + 1);
                }
            }
            _ => {
                out.copy_within(r..end, w);
                w += end - r;
                if end < n {
                    out[w] = b'/';
                    w += 1;
                }
            }
        }
        r = end + 1;
    }
    w
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
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

    fn normal(p: &str) -> String {
        let mut buf = vec![0u8; p.len()];
        let n = normalise(p.as_bytes(), &mut buf);
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn paths_are_classified_in_their_normal_form() {
        let js = journeys();
        let name = |p: &str| js.name(js.classify(&Method::POST, p)).to_string();
        for p in [
            "/api//payments",
            "//api/payments",
            "/api/%70ayments",
            "/api/%70%61yments/1",
            "/API/../api/payments",
            "/api/./payments",
            "/api/x/../payments",
            "/api/%2e/payments",
            "/api/%2E%2e/api/payments",
            "/../api/payments",
            "/api/payments/",
            "/api/payments//",
        ] {
            assert_eq!(name(p), "payments", "{p}");
        }
        // Reserved characters stay encoded: `%2F` is not a segment break.
        assert_eq!(name("/api%2Fpayments"), "other");
        assert_eq!(name("/api/pay%6Dents%2F"), "api");
        assert_eq!(name("/api/applications/%37/submit"), "application_submit");
        // A long path is normalised too (the buffer is then on the heap).
        let long = format!("/api//payments/{}", "x".repeat(600));
        assert_eq!(name(&long), "payments");
        assert_eq!(name("*"), "other");
        assert_eq!(name(""), "other");
    }

    #[test]
    fn normal_form_cases() {
        for (input, want) in [
            ("/", "/"),
            ("//", "/"),
            ("/a/b", "/a/b"),
            ("/a//b/", "/a/b/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/../../..", "/"),
            ("/a/b/../c", "/a/c"),
            ("/.../a", "/.../a"),
            ("/%7Euser/%41", "/~user/A"),
            ("/%zz/%4", "/%zz/%4"),
            ("/%2f/%3A", "/%2f/%3A"),
            ("/caf\u{e9}/./x", "/caf\u{e9}/x"),
            ("*", "*"),
        ] {
            assert_eq!(normal(input), want, "{input}");
            assert_eq!(is_normal(want.as_bytes()), !want.contains('%'), "{want}");
        }
        for p in ["/a//b", "/a/./b", "/a/..", "/.", "/%41", "//"] {
            assert!(!is_normal(p.as_bytes()), "{p}");
        }
        for p in ["/", "/a/b/", "/.a/b..", "/a.b/..c", "*", ""] {
            assert!(is_normal(p.as_bytes()), "{p}");
        }
    }

    proptest::proptest! {
        /// The normal form is never longer, and a path without escapes left
        /// after one pass is a fixed point, classified exactly like its
        /// original. (A stray `%` before an escape, `%%37%30`, can leave a new
        /// escape behind: decoding once, as the app does, keeps it encoded.)
        #[test]
        fn normalising_is_idempotent_and_classification_follows_it(
            p in "/[a-zA-Z0-9%./_~-]{0,40}",
        ) {
            let js = journeys();
            let once = normal(&p);
            proptest::prop_assert!(once.len() <= p.len());
            if !once.contains('%') {
                proptest::prop_assert!(is_normal(once.as_bytes()), "{}", once);
                proptest::prop_assert_eq!(normal(&once), once.clone());
                for m in [Method::GET, Method::POST] {
                    proptest::prop_assert_eq!(js.classify(&m, &p), js.classify(&m, &once));
                }
            }
        }
    }
}
