//! SVG charts for bench/RESULTS.md, drawn from the runs recorded with `--record` (one JSON
//! line per run, see [`crate::Report::record`]). One chart per scenario: for each setting
//! (`label`) a group of bars, one per server, the bar's height its p99 and a tick at its
//! p50. The SVG is written by hand — a few rectangles and labels need no plotting library —
//! and is byte-for-byte the same for the same records.

use crate::net::Result;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 60.0;

/// One recorded run, as much of it as a chart shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub scenario: String,
    pub target: String,
    pub label: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Reads a JSON Lines record. A later run of the same scenario, target and label replaces
/// an earlier one; labels and targets keep the order they first appeared in.
pub fn load(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()).into())
}

pub fn parse(text: &str) -> std::result::Result<Vec<Record>, String> {
    let mut records: Vec<Record> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = number + 1;
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("line {line_no}: {e}"))?;
        let text_field = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("line {line_no}: no string \"{name}\""))
        };
        let number_field = |name: &str| {
            value[name]
                .as_f64()
                .ok_or_else(|| format!("line {line_no}: no number \"{name}\""))
        };
        if untimed(&value) {
            continue;
        }
        let record = Record {
            scenario: text_field("scenario")?,
            target: text_field("target")?,
            label: text_field("label")?,
            p50_ms: number_field("p50_ms")?,
            p99_ms: number_field("p99_ms")?,
        };
        match records.iter_mut().find(|r| {
            (&r.scenario, &r.target, &r.label) == (&record.scenario, &record.target, &record.label)
        }) {
            Some(earlier) => *earlier = record,
            None => records.push(record),
        }
    }
    Ok(records)
}

/// A run whose operations were not timed (sends to a server that never replies) records
/// null latencies: it has no bar to draw.
fn untimed(value: &Value) -> bool {
    ["p50_ms", "p99_ms"]
        .iter()
        .all(|name| value.get(name).is_some_and(Value::is_null))
}

/// Writes `OUT/<scenario>.svg` for every scenario; returns the files written.
pub fn write_all(records: &[Record], out: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut by_scenario: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for record in records {
        by_scenario
            .entry(record.scenario.as_str())
            .or_default()
            .push(record);
    }
    let mut written = Vec::new();
    for (scenario, runs) in by_scenario {
        let path = out.join(format!("{scenario}.svg"));
        std::fs::write(&path, render(scenario, &runs))?;
        written.push(path);
    }
    Ok(written)
}

/// A fixed color per server, the same in every chart.
fn color(target: &str) -> &'static str {
    match target {
        "confab" => "#c0392b",
        "ceiling" => "#95a5a6",
        "centrifuge" => "#2e86c1",
        "nchan" => "#28b463",
        "nats" => "#8e44ad",
        "mosquitto" => "#e67e22",
        _ => "#5d6d7e",
    }
}

fn first_seen<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

/// Maps milliseconds to a bar height: logarithmic when the values span more than 20×.
struct Scale {
    log: bool,
    top: f64,
}

impl Scale {
    fn new(max: f64, min: f64) -> Self {
        let log = max / min.max(0.001) > 20.0;
        let top = if log {
            10f64.powf(max.max(1.0).log10().ceil())
        } else {
            nice_ceiling(max * 1.1)
        };
        Self { log, top }
    }

    /// Fraction of the plot's height for `ms`.
    fn fraction(&self, ms: f64) -> f64 {
        if self.log {
            // From 0.1 ms at the axis to `top`.
            let bottom = 0.1f64.log10();
            ((ms.max(0.1).log10() - bottom) / (self.top.log10() - bottom)).clamp(0.0, 1.0)
        } else {
            (ms / self.top).clamp(0.0, 1.0)
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut ticks = Vec::new();
            let mut tick = 0.1;
            while tick <= self.top * 1.0001 {
                ticks.push(tick);
                tick *= 10.0;
            }
            ticks
        } else {
            (0..=5).map(|i| self.top * f64::from(i) / 5.0).collect()
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    let value = value.max(0.001);
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&v| v >= value)
        .unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn format_ms(ms: f64) -> String {
    if ms >= 10.0 || ms == 0.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// One scenario's chart.
pub fn render(scenario: &str, runs: &[&Record]) -> String {
    let labels = first_seen(runs.iter().map(|r| r.label.as_str()));
    let targets = first_seen(runs.iter().map(|r| r.target.as_str()));
    let max = runs.iter().map(|r| r.p99_ms).fold(0.0, f64::max);
    let min = runs.iter().map(|r| r.p50_ms).fold(f64::INFINITY, f64::min);
    let scale = Scale::new(max, min);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |ms: f64| TOP + plot_h * (1.0 - scale.fraction(ms));

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}: p99 latency (bars), p50 (white ticks), ms{} — lower is better</text>"#,
        escape(scenario),
        if scale.log { ", log scale" } else { "" }
    );
    // Legend: one swatch per server, in a row under the title.
    let mut x = LEFT;
    for target in &targets {
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="34" width="12" height="12" fill="{}"/><text x="{}" y="44">{}</text>"#,
            color(target),
            x + 16.0,
            escape(target)
        );
        x += 30.0 + 7.0 * target.len() as f64;
    }
    // Axis and grid.
    for tick in scale.ticks() {
        let ty = y(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            ty + 4.0,
            format_ms(tick)
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#333"/><line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        TOP + plot_h,
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h
    );
    // Bars, grouped by label.
    let group_w = plot_w / labels.len().max(1) as f64;
    let bar_w = (group_w * 0.8 / targets.len().max(1) as f64).min(60.0);
    for (g, label) in labels.iter().enumerate() {
        let group_x = LEFT + group_w * g as f64;
        let bars_w = bar_w * targets.len() as f64;
        let start = group_x + (group_w - bars_w) / 2.0;
        for (t, target) in targets.iter().enumerate() {
            let Some(run) = runs
                .iter()
                .find(|r| r.label == *label && r.target == *target)
            else {
                continue;
            };
            let bx = start + bar_w * t as f64;
            let top = y(run.p99_ms);
            let _ = writeln!(
                svg,
                r#"<rect x="{bx:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: p50 {} ms, p99 {} ms</title></rect>"#,
                bar_w - 2.0,
                TOP + plot_h - top,
                color(target),
                escape(target),
                escape(label),
                format_ms(run.p50_ms),
                format_ms(run.p99_ms)
            );
            let p50 = y(run.p50_ms);
            let _ = writeln!(
                svg,
                r#"<line x1="{bx:.1}" y1="{p50:.1}" x2="{:.1}" y2="{p50:.1}" stroke="white" stroke-width="2"/>"#,
                bx + bar_w - 2.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                bx + (bar_w - 2.0) / 2.0,
                top - 3.0,
                format_ms(run.p99_ms)
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            group_x + group_w / 2.0,
            TOP + plot_h + 18.0,
            escape(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNS: &str = r#"{"scenario":"fanout","target":"confab","label":"100 members","p50_ms":3.0,"p99_ms":7.0}
{"scenario":"fanout","target":"nats","label":"100 members","p50_ms":2.0,"p99_ms":5.0}
{"scenario":"fanout","target":"confab","label":"1000 members","p50_ms":140.0,"p99_ms":490.0}
{"scenario":"fanout","target":"confab","label":"100 members","p50_ms":4.0,"p99_ms":8.0}
"#;

    #[test]
    fn a_later_run_replaces_an_earlier_one_in_place() {
        let records = parse(RUNS).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].target, "confab");
        assert_eq!(records[0].p99_ms, 8.0);
        assert_eq!(records[2].label, "1000 members");
    }

    #[test]
    fn a_bad_line_is_named() {
        let error = parse("{\"scenario\":\"x\"}\n").unwrap_err();
        assert!(error.starts_with("line 1:"), "{error}");
        let error = parse("\n{\"scenario\":\"x\",\"target\":\"t\",\"label\":\"l\",\"p50_ms\":1}\n")
            .unwrap_err();
        assert!(
            error.contains("line 2") && error.contains("p99_ms"),
            "{error}"
        );
    }

    #[test]
    fn an_untimed_run_has_no_bar() {
        let text = format!(
            "{RUNS}{}\n",
            r#"{"scenario":"fanout","target":"nchan","label":"100 members","p50_ms":null,"p99_ms":null}"#
        );
        let records = parse(&text).unwrap();
        assert_eq!(records, parse(RUNS).unwrap());
    }

    #[test]
    fn the_chart_names_every_server_and_setting_and_is_deterministic() {
        let records = parse(RUNS).unwrap();
        let runs: Vec<&Record> = records.iter().collect();
        let svg = render("fanout", &runs);
        for text in [
            "confab",
            "nats",
            "100 members",
            "1000 members",
            "log scale",
            "490",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert_eq!(svg, render("fanout", &runs));
        // Three runs, three bars (plus the background rectangle and two swatches).
        assert_eq!(svg.matches("<rect").count(), 1 + 2 + 3);
    }

    #[test]
    fn linear_scale_when_values_are_close() {
        let scale = Scale::new(48.0, 10.0);
        assert!(!scale.log);
        assert_eq!(scale.top, 100.0);
        assert_eq!(scale.fraction(50.0), 0.5);
    }
}
