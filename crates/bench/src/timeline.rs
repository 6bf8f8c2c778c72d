//! Throughput and latency second by second, and their SVG chart (`--plot`).
//!
//! Each worker keeps its own timeline (no sharing on the hot path); the phase merges them. A
//! second's latencies go into log-spaced buckets (each 5% wider than the last), so percentiles are
//! exact to within 5% — plenty for a chart, at 1 KB per second per worker.

use std::fmt::Write as _;

use serde::Serialize;

/// Buckets per second: 5% steps from 1 µs cover up to 1.05^400 µs, far past a minute.
const BUCKETS: usize = 400;
const GROWTH: f64 = 1.05;

fn bucket_of(micros: u64) -> usize {
    ((micros.max(1) as f64).ln() / GROWTH.ln()) as usize
}

fn micros_of(bucket: usize) -> f64 {
    GROWTH.powi(bucket as i32 + 1)
}

#[derive(Clone)]
struct Second {
    count: u64,
    latency: Box<[u32; BUCKETS]>,
}

impl Second {
    fn new() -> Second {
        Second { count: 0, latency: Box::new([0; BUCKETS]) }
    }

    fn percentile_ms(&self, quantile: f64) -> f64 {
        let wanted = ((self.count as f64) * quantile).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (bucket, &count) in self.latency.iter().enumerate() {
            seen += u64::from(count);
            if seen >= wanted {
                return micros_of(bucket) / 1000.0;
            }
        }
        0.0
    }
}

/// Operations completed in each second since the phase began, with their latencies.
#[derive(Clone, Default)]
pub struct Timeline {
    seconds: Vec<Second>,
}

/// One second of a timeline, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the phase began (warm-up included).
    pub second: u32,
    pub operations: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Timeline {
    /// Records `count` operations that completed in `second` with this latency.
    pub fn record(&mut self, second: usize, micros: u64, count: u64) {
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, Second::new);
        }
        let slot = &mut self.seconds[second];
        slot.count += count;
        let bucket = bucket_of(micros).min(BUCKETS - 1);
        slot.latency[bucket] = slot.latency[bucket].saturating_add(count.min(u64::from(u32::MAX)) as u32);
    }

    /// Adds another worker's timeline to this one.
    pub fn merge(&mut self, other: &Timeline) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize_with(other.seconds.len(), Second::new);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.count += theirs.count;
            for (a, b) in mine.latency.iter_mut().zip(theirs.latency.iter()) {
                *a = a.saturating_add(*b);
            }
        }
    }

    /// The reported points, one per second.
    pub fn points(&self) -> Vec<TimelinePoint> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(second, slot)| TimelinePoint {
                second: second as u32,
                operations: slot.count,
                p50_ms: slot.percentile_ms(0.50),
                p99_ms: slot.percentile_ms(0.99),
            })
            .collect()
    }
}

const WIDTH: f64 = 760.0;
const PANEL: f64 = 160.0;
const LEFT: f64 = 70.0;

fn polyline(out: &mut String, points: &[(f64, f64)], colour: &str) {
    let coordinates: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
        coordinates.join(" ")
    );
}

/// One panel: `series` (name, colour, values) over seconds, scaled to the largest value.
fn panel(out: &mut String, top: f64, title: &str, unit: &str, series: &[(&str, &str, Vec<f64>)]) {
    let longest = series.iter().map(|(_, _, values)| values.len()).max().unwrap_or(0).max(2);
    let highest = series.iter().flat_map(|(_, _, values)| values.iter().copied()).fold(0.0_f64, f64::max).max(1e-9);
    let x = |index: usize| LEFT + (WIDTH - LEFT - 10.0) * index as f64 / (longest - 1) as f64;
    let y = |value: f64| top + 20.0 + (PANEL - 40.0) * (1.0 - value / highest);
    let _ = writeln!(out, r#"<text x="{LEFT}" y="{}" font-size="13">{title}</text>"#, top + 12.0);
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{}" width="{}" height="{}" fill="none" stroke="#bbb"/>"##,
        top + 20.0,
        WIDTH - LEFT - 10.0,
        PANEL - 40.0
    );
    let _ = writeln!(out, r#"<text x="4" y="{}" font-size="11">{highest:.1} {unit}</text>"#, top + 26.0);
    let _ = writeln!(out, r#"<text x="4" y="{}" font-size="11">0</text>"#, top + PANEL - 20.0);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11">{} s</text>"#,
        WIDTH - 40.0,
        top + PANEL - 6.0,
        longest - 1
    );
    for (position, (name, colour, values)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> = values.iter().enumerate().map(|(index, &value)| (x(index), y(value))).collect();
        polyline(out, &points, colour);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="11" fill="{colour}">{name}</text>"#,
            LEFT + 200.0 + 70.0 * position as f64,
            top + 12.0
        );
    }
}

/// An SVG chart of each phase's throughput and latency over time.
pub fn render_svg(title: &str, phases: &[(&str, &[TimelinePoint])]) -> String {
    let height = 30.0 + 2.0 * PANEL * phases.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="10" y="18" font-size="14">{}</text>"#, escape(title));
    for (position, (phase, points)) in phases.iter().enumerate() {
        let top = 30.0 + 2.0 * PANEL * position as f64;
        let throughput: Vec<f64> = points.iter().map(|point| point.operations as f64).collect();
        panel(&mut out, top, &format!("{phase}: throughput"), "ops/s", &[("ops/s", "#1f77b4", throughput)]);
        let p50: Vec<f64> = points.iter().map(|point| point.p50_ms).collect();
        let p99: Vec<f64> = points.iter().map(|point| point.p99_ms).collect();
        panel(
            &mut out,
            top + PANEL,
            &format!("{phase}: latency"),
            "ms",
            &[("p50", "#2ca02c", p50), ("p99", "#d62728", p99)],
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_five_percent() {
        let mut timeline = Timeline::default();
        for micros in 1..=1000u64 {
            timeline.record(0, micros * 100, 1);
        }
        let mut other = Timeline::default();
        other.record(2, 5_000, 3);
        timeline.merge(&other);
        let points = timeline.points();
        assert_eq!(points.len(), 3);
        assert_eq!(points[0].operations, 1000);
        assert!((points[0].p50_ms - 50.0).abs() / 50.0 < 0.06, "{}", points[0].p50_ms);
        assert!((points[0].p99_ms - 99.0).abs() / 99.0 < 0.06, "{}", points[0].p99_ms);
        assert_eq!(points[1].operations, 0);
        assert_eq!(points[2].operations, 3);
        let svg = render_svg("a <test>", &[("run", &points)]);
        assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("a &lt;test&gt;"));
    }
}
