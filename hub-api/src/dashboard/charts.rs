//! Usage charts as inline SVG, drawn on the server: bars for counts per day,
//! lines for latency percentiles. Only numbers and fixed labels go into the
//! markup, so it needs no escaping; the page's CSS colours the series.

use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One data series.
pub struct Series {
    /// Legend text (a fixed label, not user input).
    pub name: &'static str,
    /// CSS class of its marks (`s1`, `s2`, `s3`).
    pub class: &'static str,
    pub values: Vec<f64>,
}

/// A "nice" axis maximum (1, 2 or 5 times a power of ten).
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_tick(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// An exact count for tooltips (ticks round, tooltips must not).
fn fmt_exact(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn frame(out: &mut String, title: &str, labels: &[String], max: f64, unit: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{title}" preserveAspectRatio="xMidYMid meet"><title>{title}</title>"#
    );
    let plot_h = H - TOP - BOTTOM;
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = TOP + plot_h - plot_h * i as f64 / 4.0;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{tx}" y="{ty:.1}" text-anchor="end">{t}{unit}</text>"#,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            t = fmt_tick(v),
        );
    }
    let n = labels.len().max(1);
    let step = (n as f64 / 6.0).ceil().max(1.0) as usize;
    let slot = (W - LEFT - RIGHT) / n as f64;
    for (i, l) in labels.iter().enumerate() {
        if i % step == 0 || i + 1 == n {
            let x = LEFT + slot * (i as f64 + 0.5);
            let _ = write!(
                out,
                r#"<text class="tick" x="{x:.1}" y="{y}" text-anchor="middle">{l}</text>"#,
                y = H - 8.0
            );
        }
    }
}

/// A bar chart of one series (e.g. requests per day).
pub fn bars(title: &str, labels: &[String], s: &Series, unit: &str) -> String {
    let max = nice_max(s.values.iter().cloned().fold(0.0, f64::max));
    let mut out = String::new();
    frame(&mut out, title, labels, max, unit);
    let n = labels.len().max(1);
    let slot = (W - LEFT - RIGHT) / n as f64;
    let plot_h = H - TOP - BOTTOM;
    for (i, v) in s.values.iter().enumerate() {
        let h = plot_h * (v / max).clamp(0.0, 1.0);
        let _ = write!(
            out,
            r#"<rect class="{c}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}"><title>{l}: {v}</title></rect>"#,
            c = s.class,
            x = LEFT + slot * i as f64 + slot * 0.15,
            y = TOP + plot_h - h,
            w = slot * 0.7,
            l = labels.get(i).map(String::as_str).unwrap_or(""),
            v = fmt_tick(*v),
        );
    }
    out.push_str("</svg>");
    out
}

/// A line chart of several series (e.g. latency p50/p95/p99), with a legend.
pub fn lines(title: &str, labels: &[String], series: &[Series], unit: &str) -> String {
    let max = nice_max(
        series
            .iter()
            .flat_map(|s| s.values.iter().cloned())
            .fold(0.0, f64::max),
    );
    let mut out = String::new();
    frame(&mut out, title, labels, max, unit);
    let n = labels.len().max(1);
    let slot = (W - LEFT - RIGHT) / n as f64;
    let plot_h = H - TOP - BOTTOM;
    for (k, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    LEFT + slot * (i as f64 + 0.5),
                    TOP + plot_h - plot_h * (v / max).clamp(0.0, 1.0)
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="line {c}" fill="none" points="{p}"/><text class="legend {c}" x="{x}" y="{y}">{name}</text>"#,
            c = s.class,
            p = pts.join(" "),
            x = LEFT + 8.0 + 70.0 * k as f64,
            y = TOP + 12.0,
            name = s.name,
        );
    }
    out.push_str("</svg>");
    out
}

/// Bars of several series stacked per day (e.g. prompt and completion
/// tokens), with a legend; each day's tooltip names every series and the
/// total.
pub fn stacked_bars(title: &str, labels: &[String], series: &[Series], unit: &str) -> String {
    let n = labels.len().max(1);
    let total = |i: usize| -> f64 { series.iter().filter_map(|s| s.values.get(i)).sum() };
    let max = nice_max((0..n).map(total).fold(0.0, f64::max));
    let mut out = String::new();
    frame(&mut out, title, labels, max, unit);
    let slot = (W - LEFT - RIGHT) / n as f64;
    let plot_h = H - TOP - BOTTOM;
    for (i, l) in labels.iter().enumerate() {
        let parts: Vec<String> = series
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    fmt_exact(s.values.get(i).copied().unwrap_or(0.0)),
                    s.name
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<g class="day"><title>{l}: {parts}, {t} total</title>"#,
            parts = parts.join(", "),
            t = fmt_exact(total(i)),
        );
        let mut base = 0.0;
        for s in series {
            let v = s.values.get(i).copied().unwrap_or(0.0);
            let h = plot_h * (v / max).clamp(0.0, 1.0);
            let y0 = plot_h * (base / max).clamp(0.0, 1.0);
            base += v;
            if h <= 0.0 {
                continue;
            }
            let _ = write!(
                out,
                r#"<rect class="{c}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}"/>"#,
                c = s.class,
                x = LEFT + slot * i as f64 + slot * 0.15,
                y = TOP + plot_h - y0 - h,
                w = slot * 0.7,
            );
        }
        out.push_str("</g>");
    }
    let mut x = LEFT + 8.0;
    for s in series {
        let _ = write!(
            out,
            r#"<rect class="swatch {c}" x="{x:.1}" y="{sy}" width="10" height="10"/><text class="legend {c}" x="{tx:.1}" y="{ty}">{name}</text>"#,
            c = s.class,
            sy = TOP + 3.0,
            tx = x + 14.0,
            ty = TOP + 12.0,
            name = s.name,
        );
        x += 14.0 + 7.0 * s.name.len() as f64 + 16.0;
    }
    out.push_str("</svg>");
    out
}

/// An endpoint's usage over the charted days, drawn.
pub struct UsageCharts {
    /// Requests per day (bars).
    pub requests: String,
    /// Prompt and completion tokens per day (stacked bars).
    pub tokens: String,
    /// Latency p50/p95/p99 per day (lines).
    pub latency: String,
    /// Prompt (input) tokens over the whole range.
    pub prompt_tokens: i64,
    /// Completion (output) tokens over the whole range: 0 for encoders.
    pub completion_tokens: i64,
}

/// The usage charts of an endpoint over `days` days from `from`: requests
/// per day; prompt and completion tokens per day as two stacked series
/// (encoders complete nothing, so theirs is all prompt); latency
/// p50/p95/p99 per day (rows of one endpoint; days without rows are zero).
pub fn usage_charts(
    usage: &[crate::db::endpoints::UsageRow],
    from: chrono::NaiveDate,
    days: i64,
) -> UsageCharts {
    let days: Vec<chrono::NaiveDate> = (0..days)
        .map(|i| from + chrono::Duration::days(i))
        .collect();
    let labels: Vec<String> = days.iter().map(|d| d.format("%m-%d").to_string()).collect();
    let pick = |f: fn(&crate::db::endpoints::UsageRow) -> f64| -> Vec<f64> {
        days.iter()
            .map(|d| usage.iter().find(|u| u.day == *d).map(f).unwrap_or(0.0))
            .collect()
    };
    let requests = bars(
        "Requests per day",
        &labels,
        &Series {
            name: "requests",
            class: "s1",
            values: pick(|u| u.requests as f64),
        },
        "",
    );
    let tokens = stacked_bars(
        "Prompt and completion tokens per day",
        &labels,
        &[
            Series {
                name: "prompt tokens",
                class: "s2",
                values: pick(|u| u.input_tokens as f64),
            },
            Series {
                name: "completion tokens",
                class: "s1",
                values: pick(|u| u.output_tokens as f64),
            },
        ],
        "",
    );
    let latency = lines(
        "Latency percentiles per day",
        &labels,
        &[
            Series {
                name: "p50",
                class: "s1",
                values: pick(|u| u.latency_p50_ms),
            },
            Series {
                name: "p95",
                class: "s2",
                values: pick(|u| u.latency_p95_ms),
            },
            Series {
                name: "p99",
                class: "s3",
                values: pick(|u| u.latency_p99_ms),
            },
        ],
        " ms",
    );
    let in_range = |u: &&crate::db::endpoints::UsageRow| days.contains(&u.day);
    UsageCharts {
        requests,
        tokens,
        latency,
        prompt_tokens: usage.iter().filter(in_range).map(|u| u.input_tokens).sum(),
        completion_tokens: usage.iter().filter(in_range).map(|u| u.output_tokens).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_shapes() {
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(120.0), 200.0);
        let labels: Vec<String> = (1..=3).map(|d| format!("11-{d:02}")).collect();
        let b = bars(
            "Requests per day",
            &labels,
            &Series {
                name: "requests",
                class: "s1",
                values: vec![1.0, 5.0, 0.0],
            },
            "",
        );
        assert!(b.starts_with("<svg") && b.ends_with("</svg>"));
        assert_eq!(b.matches("<rect").count(), 3);
        let l = lines(
            "Latency",
            &labels,
            &[Series {
                name: "p50",
                class: "s1",
                values: vec![1.0, 2.0, 3.0],
            }],
            " ms",
        );
        assert!(l.contains("<polyline"));
    }

    #[test]
    fn stacked_series_with_legend_and_totals() {
        let labels: Vec<String> = (1..=3).map(|d| format!("11-{d:02}")).collect();
        let svg = stacked_bars(
            "Tokens",
            &labels,
            &[
                Series {
                    name: "prompt tokens",
                    class: "s2",
                    values: vec![1200.0, 0.0, 30.0],
                },
                Series {
                    name: "completion tokens",
                    class: "s1",
                    values: vec![800.0, 0.0, 0.0],
                },
            ],
            "",
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        // Exact counts in the tooltip, each series named, and the day's total.
        assert!(
            svg.contains(
                "<title>11-01: 1200 prompt tokens, 800 completion tokens, 2000 total</title>"
            ),
            "{svg}"
        );
        assert!(svg.contains("<title>11-02: 0 prompt tokens, 0 completion tokens, 0 total</title>"));
        // Zero segments draw nothing: 2 on day 1, 1 on day 3, plus 2 swatches.
        let segments =
            svg.matches("<rect class=\"s1\"").count() + svg.matches("<rect class=\"s2\"").count();
        assert_eq!(segments, 3);
        assert_eq!(svg.matches("<rect class=\"swatch").count(), 2);
        assert!(svg.contains(">prompt tokens</text>") && svg.contains(">completion tokens</text>"));
        // Day 1 fills the axis (max 2000, a nice number): its two segments
        // stack to the whole plot height, prompt below completion.
        let plot_h = H - TOP - BOTTOM;
        assert!(svg.contains(&format!("y=\"{:.1}\" width", TOP + plot_h * 0.4)));
        assert!(svg.contains(&format!("y=\"{:.1}\" width", TOP)));
    }

    #[test]
    fn usage_charts_sum_prompt_and_completion() {
        let from = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let row = |day: u32, input: i64, output: i64| crate::db::endpoints::UsageRow {
            endpoint: "ep".into(),
            day: chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
            requests: 2,
            errors: 0,
            input_tokens: input,
            output_tokens: output,
            latency_p50_ms: 1.0,
            latency_p95_ms: 2.0,
            latency_p99_ms: 3.0,
        };
        // The last row is outside the three charted days: not counted.
        let usage = [row(1, 10, 0), row(3, 25, 40), row(9, 1000, 1000)];
        let c = usage_charts(&usage, from, 3);
        assert_eq!((c.prompt_tokens, c.completion_tokens), (35, 40));
        assert!(c
            .tokens
            .contains("<title>11-03: 25 prompt tokens, 40 completion tokens, 65 total</title>"));
        assert!(c
            .tokens
            .contains("<title>11-01: 10 prompt tokens, 0 completion tokens, 10 total</title>"));
        assert!(c.requests.contains(": 2</title></rect>"));
    }
}
