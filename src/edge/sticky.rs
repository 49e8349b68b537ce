//! Sticky user -> bucket mapping and the signed `rg_bucket` cookie.
//!
//! bucket = xxh3_64(key, seed = xxh3_64(rollout salt)) mod 10 000. xxh3 is a
//! specified algorithm, so the same key maps to the same bucket on every
//! instance, architecture and restart; changing the salt reshuffles users for
//! a new rollout. The key is, in order: the configured user header, the
//! configured user cookie, the id inside a valid `rg_bucket` cookie, or a new
//! random id that the response then sets in `rg_bucket`.
//!
//! `rg_bucket` holds `<id:16 hex>.<mac:16 hex>`, the mac being the first 8
//! bytes of HMAC-SHA256(secret, id). A cookie that fails the check is ignored
//! and replaced, so a client cannot pick its bucket by editing the cookie.
//!
//! Cookies are read from the raw bytes of every `Cookie` field: another
//! site's cookie with a non-ASCII value (`city=Zürich`, sent as UTF-8 or
//! Latin-1) must not hide a valid `rg_bucket` next to it, and a browser may
//! send several `rg_bucket`s (one per path or domain that set one), so each is
//! tried in order until one verifies. Otherwise the user would be re-bucketed
//! on every request and flip between V1 and V2.

use hmac::{Hmac, Mac};
use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::routing::BUCKETS;

pub const COOKIE_NAME: &str = "rg_bucket";
/// Length of a signed value: 16 hex digits, a dot, 16 hex digits.
const SIGNED_LEN: usize = 33;
/// How many well-formed `rg_bucket` values one request may make us check. A
/// browser sends one per path and domain that set it, a handful at most; the
/// cap keeps a client from making rollgate compute an HMAC per cookie for
/// hundreds of forged ones in one header.
const MAX_BUCKET_COOKIES: usize = 8;
/// 30 days, as the spec fixes.
const COOKIE_ATTRS: &str = "; Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000";

/// Where the bucket of a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The configured user header or cookie.
    UserKey,
    /// A valid `rg_bucket` cookie.
    Cookie,
    /// A new id; the response must set this cookie.
    New(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub bucket: u16,
    pub source: Source,
    /// The salted 64-bit hash of the key (`bucket` is it mod 10 000): who
    /// the user is for the beacon caps and user counts.
    pub key: u64,
}

/// Resolves requests to buckets. Built once from config.
#[derive(Clone)]
pub struct Sticky {
    seed: u64,
    mac: Hmac<Sha256>,
    user_header: Option<HeaderName>,
    user_cookie: Option<String>,
}

impl Sticky {
    pub fn new(
        salt: &str,
        secret: &[u8],
        user_header: Option<HeaderName>,
        user_cookie: Option<String>,
    ) -> Self {
        Self {
            seed: xxh3_64(salt.as_bytes()),
            mac: Hmac::new_from_slice(secret).expect("HMAC accepts keys of any length"),
            user_header,
            user_cookie,
        }
    }

    /// The stable bucket of a key.
    #[inline]
    pub fn bucket(&self, key: &[u8]) -> u16 {
        (self.hash(key) % BUCKETS as u64) as u16
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        xxh3_64_with_seed(key, self.seed)
    }

    #[inline]
    fn of(&self, key: &[u8], source: Source) -> Resolved {
        let key = self.hash(key);
        Resolved {
            bucket: (key % BUCKETS as u64) as u16,
            source,
            key,
        }
    }

    /// Picks the key of a request and returns its bucket.
    pub fn resolve(&self, headers: &HeaderMap) -> Resolved {
        if let Some(key) = self
            .user_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .map(|v| v.as_bytes())
            .filter(|k| !k.is_empty())
        {
            return self.of(key, Source::UserKey);
        }
        if let Some(key) = self
            .user_cookie
            .as_deref()
            .and_then(|name| cookies(headers, name).next())
            .filter(|k| !k.is_empty())
        {
            return self.of(key, Source::UserKey);
        }
        if let Some(id) = cookies(headers, COOKIE_NAME)
            .filter(|v| v.len() == SIGNED_LEN)
            .take(MAX_BUCKET_COOKIES)
            .find_map(|v| self.verify(std::str::from_utf8(v).ok()?))
        {
            return self.of(id.as_bytes(), Source::Cookie);
        }
        let id = rand::random::<u64>();
        self.of(hex16(id).as_bytes(), Source::New(id))
    }

    fn tag(&self, id: &[u8]) -> [u8; 8] {
        let mut mac = self.mac.clone();
        mac.update(id);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 8];
        out.copy_from_slice(&full[..8]);
        out
    }

    /// Returns the id part of a well-formed, correctly signed cookie value.
    pub fn verify<'a>(&self, value: &'a str) -> Option<&'a str> {
        let (id, mac) = value.split_once('.')?;
        // Lower-case hex only, as `cookie_value` writes it: exactly one
        // spelling of each signed value is accepted.
        let hex =
            |s: &str| s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex(id) || !hex(mac) {
            return None;
        }
        let mut got = [0u8; 8];
        hex::decode_to_slice(mac, &mut got).ok()?;
        bool::from(self.tag(id.as_bytes()).ct_eq(&got)).then_some(id)
    }

    /// The signed cookie value for an id.
    pub fn cookie_value(&self, id: u64) -> String {
        let id = hex16(id);
        let tag = self.tag(id.as_bytes());
        format!("{id}.{}", hex::encode(tag))
    }

    /// The `Set-Cookie` header for a new id.
    pub fn set_cookie(&self, id: u64, secure: bool) -> HeaderValue {
        let secure = if secure { "; Secure" } else { "" };
        let v = format!(
            "{COOKIE_NAME}={}{COOKIE_ATTRS}{secure}",
            self.cookie_value(id)
        );
        HeaderValue::from_str(&v).expect("cookie is ASCII")
    }
}

/// Lower-case, zero-padded 16-digit hex on the stack.
fn hex16(id: u64) -> HexId {
    let mut buf = [0u8; 16];
    hex::encode_to_slice(id.to_be_bytes(), &mut buf).expect("16 bytes fit");
    HexId(buf)
}

struct HexId([u8; 16]);

impl HexId {
    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for HexId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.0).expect("hex is ASCII"))
    }
}

/// The values of every cookie called `name`, in order, across all `Cookie`
/// fields, read from raw bytes (a value need not be ASCII or UTF-8). Quotes
/// around a value are dropped. No allocation.
pub(crate) fn cookies<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes())
                .then(|| unquote(pair[eq + 1..].trim_ascii()))
        })
}

fn unquote(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b'"').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b'"').map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sticky() -> Sticky {
        Sticky::new(
            "rollout-1",
            b"test-secret",
            Some(HeaderName::from_static("x-user-id")),
            Some("uid".into()),
        )
    }

    #[test]
    fn buckets_are_pinned_across_runs_and_builds() {
        // These values are part of the contract: users must not move between
        // releases of rollgate. If this fails, stickiness broke.
        let s = sticky();
        let got: Vec<u16> = ["alice", "bob", "user-42", ""]
            .iter()
            .map(|k| s.bucket(k.as_bytes()))
            .collect();
        assert_eq!(got, PINNED);
        // Another salt gives another shuffle.
        let other = Sticky::new("rollout-2", b"x", None, None);
        assert_ne!(other.bucket(b"alice"), got[0]);
    }
    // Cross-checked with Python's `xxhash` package:
    // seed = xxh3_64_intdigest(b"rollout-1");
    // [xxh3_64_intdigest(k, seed=seed) % 10000 for k in (b"alice", b"bob", b"user-42", b"")]
    const PINNED: [u16; 4] = [4176, 6612, 8430, 5350];

    #[test]
    fn key_sources_in_order() {
        let s = sticky();
        let mut h = HeaderMap::new();
        h.insert("x-user-id", HeaderValue::from_static("alice"));
        h.insert(COOKIE, HeaderValue::from_static("uid=bob"));
        assert_eq!(s.resolve(&h).bucket, s.bucket(b"alice"));
        assert_eq!(s.resolve(&h).source, Source::UserKey);
        h.remove("x-user-id");
        assert_eq!(s.resolve(&h).bucket, s.bucket(b"bob"));

        let cookie = format!("a=1; {COOKIE_NAME}={}; b=2", s.cookie_value(7));
        let h = HeaderMap::from_iter([(COOKIE, HeaderValue::from_str(&cookie).unwrap())]);
        let r = s.resolve(&h);
        assert_eq!(r.source, Source::Cookie);
        assert_eq!(r.bucket, s.bucket(b"0000000000000007"));

        let r = s.resolve(&HeaderMap::new());
        let Source::New(id) = r.source else {
            panic!("expected a new id")
        };
        assert_eq!(r.bucket, s.bucket(hex16(id).as_bytes()));
    }

    #[test]
    fn tampered_or_malformed_cookies_are_rejected() {
        let s = sticky();
        let good = s.cookie_value(0xdead_beef);
        assert_eq!(s.verify(&good), Some("00000000deadbeef"));
        let mut forged = good.clone().into_bytes();
        forged[3] = if forged[3] == b'1' { b'2' } else { b'1' };
        assert_eq!(s.verify(std::str::from_utf8(&forged).unwrap()), None);
        for bad in [
            "",
            ".",
            "abc",
            "00000000deadbeef",
            "00000000deadbeef.",
            "zz00000000000000.0000000000000000",
        ] {
            assert_eq!(s.verify(bad), None, "{bad:?}");
        }
        // Another spelling of a signed value (upper-case hex) is not the signed value.
        for bad in [good.to_ascii_uppercase(), {
            let (id, mac) = good.split_once('.').unwrap();
            format!("{id}.{}", mac.to_ascii_uppercase())
        }] {
            assert_eq!(s.verify(&bad), None, "{bad:?}");
        }
        // Signed with another secret.
        let other = Sticky::new("rollout-1", b"other", None, None);
        assert_eq!(s.verify(&other.cookie_value(1)), None);
        let sc = s.set_cookie(1, true);
        assert_eq!(s.cookie_value(1).len(), SIGNED_LEN);
        let sc = sc.to_str().unwrap();
        assert!(sc.starts_with("rg_bucket="));
        assert!(sc.ends_with("; Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000; Secure"));
    }

    fn with_cookies(fields: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for f in fields {
            h.append(COOKIE, HeaderValue::from_bytes(f).unwrap());
        }
        h
    }

    #[test]
    fn a_valid_bucket_cookie_is_found_beside_non_ascii_and_bad_ones() {
        let s = Sticky::new("rollout-1", b"test-secret", None, Some("uid".into()));
        let good = s.cookie_value(42);
        let want = s.bucket(b"000000000000002a");
        let cases: Vec<Vec<Vec<u8>>> = vec![
            // UTF-8 and Latin-1 values of another cookie in the same field.
            vec![format!("city=Zürich; {COOKIE_NAME}={good}").into_bytes()],
            vec![[b"city=Z\xfcrich; ".as_slice(), format!("{COOKIE_NAME}={good}").as_bytes()].concat()],
            // A forged and a malformed one before the real one, in one field
            // and across HTTP/2 crumbs.
            vec![format!(
                "{COOKIE_NAME}=0000000000000001.0000000000000000; {COOKIE_NAME}=junk; {COOKIE_NAME}=\"{good}\""
            )
            .into_bytes()],
            vec![
                format!("{COOKIE_NAME}=0000000000000001.0000000000000000").into_bytes(),
                b"x=\xff\xfe".to_vec(),
                format!("a=1;{COOKIE_NAME} = {good} ").into_bytes(),
            ],
        ];
        for fields in cases {
            let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
            let r = s.resolve(&with_cookies(&refs));
            assert_eq!(r.source, Source::Cookie, "{fields:?}");
            assert_eq!(r.bucket, want, "{fields:?}");
        }
        // A non-UTF-8 user cookie is still the user's key.
        let r = s.resolve(&with_cookies(&[b"uid=J\xf6rg"]));
        assert_eq!(
            (r.source, r.bucket),
            (Source::UserKey, s.bucket(b"J\xf6rg"))
        );
        // Only forged ones: a new id.
        let forged = format!("{COOKIE_NAME}=0000000000000001.0000000000000000");
        assert!(matches!(
            s.resolve(&with_cookies(&[forged.as_bytes()])).source,
            Source::New(_)
        ));
        // Past the cap of checked values, a real one is not looked for.
        let many = [forged.as_str(); MAX_BUCKET_COOKIES].join("; ");
        let h = with_cookies(&[many.as_bytes(), format!("{COOKIE_NAME}={good}").as_bytes()]);
        assert!(matches!(s.resolve(&h).source, Source::New(_)));
    }

    #[test]
    fn cookie_values_are_split_from_raw_bytes() {
        let h = with_cookies(&[b"a=1; b=\"two\"; c=; =x; d", b"b=3;b=4"]);
        let got: Vec<&[u8]> = cookies(&h, "b").collect();
        assert_eq!(got, [b"two".as_slice(), b"3", b"4"]);
        assert_eq!(cookies(&h, "c").collect::<Vec<_>>(), [b"".as_slice()]);
        assert_eq!(cookies(&h, "d").count(), 0);
        assert_eq!(unquote(b"\""), b"");
    }
}
