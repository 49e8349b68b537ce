//! Turns the raw results of `compare.sh` (JSON lines) into the comparison
//! section of BENCHMARKS.md (medians over rounds, ratios, target verdicts)
//! and an SVG chart of req/s and p99 per proxy.
//!
//! Input lines (extra fields are ignored):
//! - `{"kind":"throughput","proxy":P,"workers":W,"pinned":B,"round":R,"conns":C,"rss_kb":K,"wrk":{"rps":..,"p50_us":..,"p99_us":..,"p999_us":..,"max_us":..,"errors":..}}`
//! - `{"kind":"fixed_rate","proxy":P,"workers":W,"pinned":B,"round":R,"rss_kb":K,"report":<rollgate-load report>}`
//! - `{"kind":"sweep","proxy":P,"workers":W,"pinned":B,"conns":C,"wrk":{..}}`
//! - `{"kind":"idle","proxy":P,"conns":C,"rss_kb":K}`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use crate::stats::Report;

/// Display order and labels.
pub const PROXIES: [(&str, &str); 6] = [
    ("direct", "direct (no proxy)"),
    ("nginx", "nginx"),
    ("haproxy", "HAProxy"),
    ("rollgate", "rollgate, telemetry on"),
    ("rollgate-notel", "rollgate, telemetry off"),
    ("rollgate-shared", "rollgate, shared runtime"),
];

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Wrk {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    #[serde(default)]
    pub max_us: f64,
    #[serde(default)]
    pub errors: u64,
}

impl Wrk {
    /// The same numbers from a closed-loop rollgate-load report (quick mode
    /// runs without wrk).
    pub fn from_report(r: &Report) -> Wrk {
        Wrk {
            rps: r.achieved_rate,
            p50_us: r.latency.p50_us as f64,
            p99_us: r.latency.p99_us as f64,
            p999_us: r.latency.p999_us as f64,
            max_us: r.latency.max_us as f64,
            errors: r.errors.values().sum::<u64>()
                + r.status
                    .iter()
                    .filter(|(k, _)| !k.starts_with('2') && !k.starts_with('3'))
                    .map(|(_, v)| v)
                    .sum::<u64>(),
        }
    }
}

/// `wrk` numbers, or a rollgate-load report to take them from.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Measured {
    Wrk { wrk: Wrk },
    Report { report: Box<Report> },
}

impl Measured {
    fn wrk(self) -> Wrk {
        match self {
            Measured::Wrk { wrk } => wrk,
            Measured::Report { report } => Wrk::from_report(&report),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    Throughput {
        proxy: String,
        workers: u32,
        pinned: bool,
        conns: u32,
        #[serde(default)]
        rss_kb: u64,
        #[serde(flatten)]
        measured: Measured,
    },
    FixedRate {
        proxy: String,
        workers: u32,
        pinned: bool,
        #[serde(default)]
        rss_kb: u64,
        report: Box<Report>,
    },
    Sweep {
        proxy: String,
        conns: u32,
        #[serde(flatten)]
        measured: Measured,
    },
    Idle {
        proxy: String,
        conns: u32,
        rss_kb: u64,
    },
}

/// Context printed above the tables.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    pub command: String,
    pub machine: String,
    pub date: String,
    pub load: String,
    pub versions: String,
    pub notes: String,
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of one (proxy, workers, pinned) cell.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub rounds: usize,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub rss_mib: f64,
    pub errors: u64,
}

type Key = (u32, bool);

/// Everything the tables need.
#[derive(Default)]
pub struct Results {
    /// (workers, pinned) -> proxy -> medians.
    pub throughput: BTreeMap<Key, BTreeMap<String, Cell>>,
    pub fixed: BTreeMap<Key, BTreeMap<String, (f64, Cell)>>,
    /// conns -> proxy -> (rps, p99).
    pub sweep: BTreeMap<u32, BTreeMap<String, (f64, f64)>>,
    pub idle: BTreeMap<String, (u32, f64)>,
    pub conns: u32,
}

pub fn load(path: &Path) -> anyhow::Result<Results> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut raw_t: BTreeMap<(Key, String), Vec<(Wrk, u64)>> = BTreeMap::new();
    let mut raw_f: BTreeMap<(Key, String), Vec<(Report, u64)>> = BTreeMap::new();
    let mut r = Results::default();
    for (n, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(l)
            .with_context(|| format!("{}:{}: not a result line", path.display(), n + 1))?;
        match line {
            Line::Throughput {
                proxy,
                workers,
                pinned,
                conns,
                rss_kb,
                measured,
            } => {
                let wrk = measured.wrk();
                r.conns = conns;
                raw_t
                    .entry(((workers, pinned), proxy))
                    .or_default()
                    .push((wrk, rss_kb));
            }
            Line::FixedRate {
                proxy,
                workers,
                pinned,
                rss_kb,
                report,
            } => raw_f
                .entry(((workers, pinned), proxy))
                .or_default()
                .push((*report, rss_kb)),
            Line::Sweep {
                proxy,
                conns,
                measured,
            } => {
                let wrk = measured.wrk();
                r.sweep
                    .entry(conns)
                    .or_default()
                    .insert(proxy, (wrk.rps, wrk.p99_us));
            }
            Line::Idle {
                proxy,
                conns,
                rss_kb,
            } => {
                r.idle.insert(proxy, (conns, rss_kb as f64 / 1024.0));
            }
        }
    }
    for ((key, proxy), v) in raw_t {
        let col = |f: &dyn Fn(&(Wrk, u64)) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
        let cell = Cell {
            rounds: v.len(),
            rps: col(&|x| x.0.rps),
            p50_us: col(&|x| x.0.p50_us),
            p99_us: col(&|x| x.0.p99_us),
            p999_us: col(&|x| x.0.p999_us),
            rss_mib: col(&|x| x.1 as f64 / 1024.0),
            errors: v.iter().map(|x| x.0.errors).sum(),
        };
        r.throughput.entry(key).or_default().insert(proxy, cell);
    }
    for ((key, proxy), v) in raw_f {
        let col =
            |f: &dyn Fn(&(Report, u64)) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
        let rate = v[0].0.rate.unwrap_or(0.0);
        let cell = Cell {
            rounds: v.len(),
            rps: col(&|x| x.0.achieved_rate),
            p50_us: col(&|x| x.0.latency.p50_us as f64),
            p99_us: col(&|x| x.0.latency.p99_us as f64),
            p999_us: col(&|x| x.0.latency.p999_us as f64),
            rss_mib: col(&|x| x.1 as f64 / 1024.0),
            errors: v
                .iter()
                .map(|x| x.0.errors.values().sum::<u64>() + x.0.sent - x.0.completed)
                .sum(),
        };
        r.fixed.entry(key).or_default().insert(proxy, (rate, cell));
    }
    Ok(r)
}

fn label(p: &str) -> &str {
    PROXIES.iter().find(|(k, _)| *k == p).map_or(p, |(_, l)| *l)
}

fn ordered<T>(m: &BTreeMap<String, T>) -> Vec<(&str, &T)> {
    let mut v: Vec<(&str, &T)> = PROXIES
        .iter()
        .filter_map(|(k, _)| m.get(*k).map(|c| (*k, c)))
        .collect();
    for (k, c) in m {
        if !PROXIES.iter().any(|(p, _)| p == k) {
            v.push((k.as_str(), c));
        }
    }
    v
}

fn setting((workers, pinned): Key) -> String {
    format!(
        "{} worker{}, {}",
        workers,
        if workers == 1 { "" } else { "s" },
        if pinned {
            "pinned (proxy on core 0; wrk + backend on core 1)"
        } else {
            "unpinned"
        }
    )
}

fn ms(us: f64) -> String {
    if us.is_nan() {
        "–".into()
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        "–".into()
    } else {
        format!("{:.2}×", a / b)
    }
}

/// A target verdict line.
struct Verdict {
    met: bool,
    text: String,
}

fn verdicts(r: &Results) -> Vec<Verdict> {
    let mut v = Vec::new();
    for (key, cells) in &r.throughput {
        let (Some(ng), Some(rg)) = (cells.get("nginx"), cells.get("rollgate")) else {
            continue;
        };
        v.push(Verdict {
            met: rg.rps >= ng.rps,
            text: format!(
                "req/s ≥ 1.0× nginx ({}): {:.0} vs {:.0} = {}",
                setting(*key),
                rg.rps,
                ng.rps,
                ratio(rg.rps, ng.rps)
            ),
        });
        if let Some(off) = cells.get("rollgate-notel") {
            v.push(Verdict {
                met: rg.rps >= 0.97 * off.rps,
                text: format!(
                    "telemetry on ≥ 0.97× off ({}): {}",
                    setting(*key),
                    ratio(rg.rps, off.rps)
                ),
            });
        }
        v.push(Verdict {
            met: rg.rss_mib <= ng.rss_mib,
            text: format!(
                "RSS under load ≤ nginx ({}): {:.1} MiB vs {:.1} MiB",
                setting(*key),
                rg.rss_mib,
                ng.rss_mib
            ),
        });
    }
    for (key, cells) in &r.fixed {
        let (Some((_, ng)), Some((_, rg))) = (cells.get("nginx"), cells.get("rollgate")) else {
            continue;
        };
        v.push(Verdict {
            met: rg.p99_us <= ng.p99_us,
            text: format!(
                "p99 ≤ nginx at a fixed rate ({}): {} ms vs {} ms",
                setting(*key),
                ms(rg.p99_us),
                ms(ng.p99_us)
            ),
        });
        if let Some((_, d)) = cells.get("direct") {
            let (a50, a99) = (rg.p50_us - d.p50_us, rg.p99_us - d.p99_us);
            let (n50, n99) = (ng.p50_us - d.p50_us, ng.p99_us - d.p99_us);
            v.push(Verdict {
                met: a50 <= n50 && a99 <= n99,
                text: format!(
                    "latency added over direct ≤ nginx's ({}): p50 +{} vs +{} ms, p99 +{} vs +{} ms",
                    setting(*key),
                    ms(a50),
                    ms(n50),
                    ms(a99),
                    ms(n99)
                ),
            });
        }
    }
    if let Some((conns, mib)) = r.idle.get("rollgate") {
        v.push(Verdict {
            met: *mib <= 40.0,
            text: format!("RSS with {conns} idle keep-alive connections ≤ 40 MiB: {mib:.1} MiB"),
        });
    }
    v
}

/// The Markdown section (between the markers in BENCHMARKS.md).
pub fn markdown(r: &Results, meta: &Meta, chart: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Comparison with nginx and HAProxy\n");
    let _ = writeln!(
        s,
        "Generated by `loadtest/compare.sh` (see `loadtest/README.md`); do not edit by hand.\n"
    );
    let _ = writeln!(s, "- **Command:** `{}`", meta.command);
    let _ = writeln!(s, "- **Date:** {}", meta.date);
    let _ = writeln!(s, "- **Machine:** {}", meta.machine);
    let _ = writeln!(s, "- **Load average:** {}", meta.load);
    if !meta.versions.is_empty() {
        let _ = writeln!(s, "- **Versions:** {}", meta.versions);
    }
    let _ = writeln!(
        s,
        "- **Setup:** backend = 1-worker nginx `return 200` on two ports (V1, V2); every proxy splits 50/50 between them \
         (nginx `split_clients` on `x-user-id` + upstream keepalive; HAProxy weighted servers + cookie insert + `http-reuse always`; \
         rollgate `PUT /api/v1/weights {{\"v2\":50}}`). Same worker count for all (nginx `worker_processes`, HAProxy `nbthread`, \
         rollgate `workers`, `runtime = \"per_core\"` unless noted). Throughput: `wrk -t1 -c{} -d<dur>`, rounds alternate proxies \
         (A B C … A B C …), medians over rounds. RSS = sum over the proxy's processes, sampled under load (max).",
        r.conns
    );
    if !meta.notes.is_empty() {
        let _ = writeln!(s, "- **Notes:** {}", meta.notes);
    }
    let _ = writeln!(s);
    if let Some(c) = chart {
        let _ = writeln!(s, "![req/s and p99 per proxy]({c})\n");
    }

    let _ = writeln!(s, "### Throughput (closed loop, wrk)\n");
    for (key, cells) in &r.throughput {
        let nginx = cells.get("nginx").map_or(f64::NAN, |c| c.rps);
        let direct = cells.get("direct").map_or(f64::NAN, |c| c.rps);
        let _ = writeln!(s, "**{}**\n", setting(*key));
        let _ = writeln!(
            s,
            "| proxy | rounds | req/s | × nginx | × direct | p50 ms | p99 ms | p99.9 ms | RSS MiB | errors |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for (p, c) in ordered(cells) {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {} |",
                label(p),
                c.rounds,
                c.rps,
                ratio(c.rps, nginx),
                ratio(c.rps, direct),
                ms(c.p50_us),
                ms(c.p99_us),
                ms(c.p999_us),
                c.rss_mib,
                c.errors
            );
        }
        let _ = writeln!(s);
    }

    if !r.fixed.is_empty() {
        let _ = writeln!(
            s,
            "### Latency at a fixed rate (open loop, rollgate-load, latency from the intended send time)\n"
        );
        for (key, cells) in &r.fixed {
            let direct = cells.get("direct").map(|x| &x.1);
            let _ = writeln!(s, "**{}**\n", setting(*key));
            let _ = writeln!(
                s,
                "| proxy | rate/s | achieved | p50 ms | p99 ms | p99.9 ms | added p50 | added p99 | RSS MiB | errors |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
            for (p, (rate, c)) in ordered(cells) {
                let add = |f: fn(&Cell) -> f64| direct.map_or("–".into(), |d| ms(f(c) - f(d)));
                let _ = writeln!(
                    s,
                    "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.1} | {} |",
                    label(p),
                    rate,
                    c.rps,
                    ms(c.p50_us),
                    ms(c.p99_us),
                    ms(c.p999_us),
                    add(|c| c.p50_us),
                    add(|c| c.p99_us),
                    c.rss_mib,
                    c.errors
                );
            }
            let _ = writeln!(s);
        }
    }

    if !r.sweep.is_empty() {
        let _ = writeln!(
            s,
            "### Connections sweep (wrk, 1 worker, unpinned; req/s and p99 ms)\n"
        );
        let mut proxies: Vec<&str> = Vec::new();
        for m in r.sweep.values() {
            for (p, _) in ordered(m) {
                if !proxies.contains(&p) {
                    proxies.push(p);
                }
            }
        }
        let _ = write!(s, "| connections |");
        for p in &proxies {
            let _ = write!(s, " {} |", label(p));
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "|---|{}", "---|".repeat(proxies.len()));
        for (conns, m) in &r.sweep {
            let _ = write!(s, "| {conns} |");
            for p in &proxies {
                match m.get(*p) {
                    Some((rps, p99)) => {
                        let _ = write!(s, " {:.0} / {} |", rps, ms(*p99));
                    }
                    None => {
                        let _ = write!(s, " – |");
                    }
                }
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(s);
    }

    if !r.idle.is_empty() {
        let _ = writeln!(s, "### Memory with idle keep-alive connections\n");
        let _ = writeln!(s, "| proxy | idle connections | RSS MiB |");
        let _ = writeln!(s, "|---|---|---|");
        for (p, (conns, mib)) in ordered(&r.idle) {
            let _ = writeln!(s, "| {} | {} | {:.1} |", label(p), conns, mib);
        }
        let _ = writeln!(s);
    }

    let v = verdicts(r);
    if !v.is_empty() {
        let _ = writeln!(s, "### Targets\n");
        for x in v {
            let _ = writeln!(
                s,
                "- {} {}",
                if x.met { "✅ met:" } else { "❌ missed:" },
                x.text
            );
        }
        let _ = writeln!(s);
    }
    s
}

pub const BEGIN: &str = "<!-- comparison:begin (loadtest/compare.sh) -->";
pub const END: &str = "<!-- comparison:end -->";

/// Replaces the comparison section of `doc` (between the markers) or
/// appends it; the rest of the file is left as it was.
pub fn splice(doc: &str, section: &str) -> String {
    let block = format!("{BEGIN}\n{}{END}\n", section);
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if e > b => {
            let after = &doc[e + END.len()..];
            let after = after.strip_prefix('\n').unwrap_or(after);
            format!("{}{}{}", &doc[..b], block, after)
        }
        _ => {
            let mut d = doc.to_string();
            if !d.is_empty() && !d.ends_with("\n\n") {
                d.push_str(if d.ends_with('\n') { "\n" } else { "\n\n" });
            }
            d.push_str(&block);
            d
        }
    }
}

/// SVG: median req/s (top) and p99 (bottom) per proxy, grouped by setting.
pub fn chart(r: &Results, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let groups: Vec<(Key, &BTreeMap<String, Cell>)> =
        r.throughput.iter().map(|(k, v)| (*k, v)).collect();
    if groups.is_empty() {
        anyhow::bail!("no throughput results to chart");
    }
    let proxies: Vec<&str> = PROXIES
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| groups.iter().any(|(_, m)| m.contains_key(*k)))
        .collect();
    let colors = [
        RGBColor(120, 120, 120),
        RGBColor(0, 150, 57),
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
    ];
    let slot = proxies.len() + 1;
    let n = groups.len() * slot;
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(380);
    let group_label = |x: f64| -> String {
        let g = (x / slot as f64).floor() as usize;
        match groups.get(g) {
            Some(((w, pinned), _)) => format!(
                "{} worker{}, {}",
                w,
                if *w == 1 { "" } else { "s" },
                if *pinned { "pinned" } else { "unpinned" }
            ),
            None => String::new(),
        }
    };
    type Metric = fn(&Cell) -> f64;
    let panels: [(
        DrawingArea<SVGBackend, plotters::coord::Shift>,
        &str,
        Metric,
    ); 2] = [
        (top, "req/s (median, higher is better)", |c| c.rps),
        (
            bottom,
            "p99 ms under max load (median, lower is better)",
            |c| c.p99_us / 1000.0,
        ),
    ];
    for (pi, (area, title, metric)) in panels.into_iter().enumerate() {
        let max = groups
            .iter()
            .flat_map(|(_, m)| m.values().map(metric))
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        // Head room above the bars for the group names (and the legend on top).
        let (top_y, label_y) = if pi == 0 {
            (max * 1.9, max * 1.08)
        } else {
            (max * 1.15, max * 1.04)
        };
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, 0f64..top_y.max(1e-9))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(8)
            .light_line_style(WHITE)
            .draw()?;
        // Each group (worker count, pinning) is named above its bars.
        chart.draw_series(groups.iter().enumerate().map(|(g, _)| {
            let x = (g * slot) as f64 + 0.5;
            Text::new(group_label(x), (x, label_y), ("sans-serif", 14))
        }))?;
        for (i, p) in proxies.iter().enumerate() {
            let color = colors[i % colors.len()];
            let bars = groups.iter().enumerate().filter_map(|(g, (_, m))| {
                let v = metric(m.get(*p)?);
                let x0 = (g * slot + i) as f64 + 0.5;
                Some(Rectangle::new([(x0, 0.0), (x0 + 0.9, v)], color.filled()))
            });
            let series = chart.draw_series(bars)?;
            if pi == 0 {
                series.label(label(p)).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
            }
        }
        if pi == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_splice() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        let doc = "# Benchmarks\n\nother helper's text\n";
        let once = splice(doc, "A\n");
        assert!(once.starts_with(doc));
        assert!(once.contains("A\n"));
        let twice = splice(&once, "B\n");
        assert!(!twice.contains("A\n") && twice.contains("B\n"));
        assert!(twice.starts_with(doc));
        let with_tail = format!("{twice}\n## Later section\n");
        let thrice = splice(&with_tail, "C\n");
        assert!(thrice.contains("## Later section") && thrice.contains("C\n"));
    }
}
