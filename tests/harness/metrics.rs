//! Reading `/metrics`: the Prometheus text format parsed into samples, one
//! value looked up by name and labels, and `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// One sample of the Prometheus text format.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a Prometheus text exposition (comments skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let rest = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                    let labels = rest
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair
                                .split_once("=\"")
                                .unwrap_or_else(|| panic!("bad label in {line:?}"));
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
            };
            Sample {
                name: name.to_string(),
                labels,
                value,
            }
        })
        .collect()
}

/// The samples `name` whose labels include all of `labels`, in page order.
pub fn samples<'a>(
    text: &str,
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = Sample> + 'a {
    parse_samples(text).into_iter().filter(move |s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// The value of the first sample `name` whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name, labels).next().map(|s| s.value)
}

/// The sum of every sample `name` whose labels include all of `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, name, labels).map(|s| s.value).sum()
}

/// The value of the series `name{labels}` written as on the page (exactly
/// those labels), 0 when absent.
pub fn series(page: &str, name_and_labels: &str) -> f64 {
    let want = parse_samples(&format!("{name_and_labels} 0"))
        .pop()
        .expect("a series");
    parse_samples(page)
        .into_iter()
        .find(|s| s.name == want.name && s.labels == want.labels)
        .map_or(0.0, |s| s.value)
}

/// `promtool check metrics` on a page: fails the test when promtool finds a
/// problem, or is not installed (`scripts/test.sh` installs it).
pub fn promtool_check(page: &str) {
    if promtool_check_if_installed(page).is_none() {
        panic!(
            "promtool is not installed, so /metrics cannot be checked. Run the tests through \
             scripts/test.sh (it installs the Debian package `prometheus`, which provides promtool), \
             or `apt-get install prometheus` yourself."
        );
    }
}

/// `promtool check metrics` on a page when promtool is installed (its
/// output); `None` when it is not. A problem it finds fails the test.
pub fn promtool_check_if_installed(page: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\nstdout: {}\nstderr: {}\n--- metrics ---\n{page}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
