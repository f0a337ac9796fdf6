//! SVG charts: latency over time and the latency distribution of one run (`--plot`), and the
//! grouped bars of a peer comparison.
//!
//! Written by hand rather than with `plotters`: these are three fixed chart shapes, and
//! plotters needs a font backend (system fonts or an embedded TTF) to lay out any text,
//! which would add a native dependency to a benchmark tool.

use std::fmt::Write;

use hdrhistogram::Histogram;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 45.0;
/// Horizontal grid lines per panel.
const Y_TICKS: usize = 5;
/// Percentiles on the distribution chart's axis (as "nines": 0 = p0, 1 = p90, 2 = p99, …).
const NINES_MAX: f64 = 4.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];

/// A named line of `(x, y)` points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

struct Panel {
    top: f64,
    x_max: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, v: f64) -> f64 {
        MARGIN_LEFT + v / self.x_max * (WIDTH - MARGIN_LEFT - MARGIN_RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        self.top + PANEL_HEIGHT
            - MARGIN_BOTTOM
            - v / self.y_max * (PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM)
    }
}

/// A round axis maximum at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * mag)
}

fn axes(svg: &mut String, p: &Panel, title: &str, x_label: &str, y_label: &str) {
    let (x0, x1) = (p.x(0.0), p.x(p.x_max));
    let (y0, y1) = (p.y(0.0), p.y(p.y_max));
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="15" font-weight="bold">{title}</text>"#,
        MARGIN_LEFT,
        p.top + 22.0
    );
    for i in 0..=Y_TICKS {
        let v = p.y_max * i as f64 / Y_TICKS as f64;
        let y = p.y(v);
        let _ = write!(
            svg,
            r##"<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            trim(v)
        );
    }
    let _ = write!(
        svg,
        r#"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{x_label}</text>"#,
        (x0 + x1) / 2.0,
        y0 + 35.0
    );
    let _ = write!(
        svg,
        r#"<text x="14" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {})">{y_label}</text>"#,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
}

fn trim(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn lines(svg: &mut String, p: &Panel, series: &[Series]) {
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", p.x(x), p.y(y.min(p.y_max))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        let lx = WIDTH - MARGIN_RIGHT - 150.0;
        let ly = p.top + 20.0 + 16.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="{}" width="12" height="3" fill="{color}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
            ly - 4.0,
            lx + 18.0,
            ly,
            s.name
        );
    }
}

/// Two panels: p50/p99/max latency per second of the run, and the latency distribution
/// (percentile on a "nines" axis).
pub fn latency_svg(
    title: &str,
    per_second: &[(f64, Histogram<u64>)],
    total: &Histogram<u64>,
) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let quantile_series = |name: &str, q: f64| Series {
        name: name.into(),
        points: per_second
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(t, h)| (*t, ms(h.value_at_quantile(q))))
            .collect(),
    };
    let over_time = vec![
        quantile_series("p50", 0.50),
        quantile_series("p99", 0.99),
        quantile_series("max", 1.0),
    ];
    let dist = Series {
        name: "latency".into(),
        points: (0..=(NINES_MAX * 20.0) as usize)
            .map(|i| {
                let nines = i as f64 / 20.0;
                let q = 1.0 - 10f64.powf(-nines);
                (nines, ms(total.value_at_quantile(q)))
            })
            .collect(),
    };
    let mut svg = header(2.0);
    let t_max = per_second.last().map_or(1.0, |(t, _)| *t).max(1.0);
    let y_time = nice_max(
        over_time
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let top = Panel {
        top: 0.0,
        x_max: t_max,
        y_max: y_time,
    };
    axes(
        &mut svg,
        &top,
        &format!("{title}: latency over time"),
        "time (s)",
        "latency (ms)",
    );
    lines(&mut svg, &top, &over_time);
    let bottom = Panel {
        top: PANEL_HEIGHT,
        x_max: NINES_MAX,
        y_max: nice_max(ms(total.max())),
    };
    axes(
        &mut svg,
        &bottom,
        "latency distribution",
        "percentile (0 = p0, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99)",
        "latency (ms)",
    );
    lines(&mut svg, &bottom, &[dist]);
    svg.push_str("</svg>\n");
    svg
}

/// One panel of grouped bars per metric: `groups` are metric names with one value per target.
pub fn bars_svg(targets: &[&str], groups: &[(String, Vec<Option<f64>>)]) -> String {
    let mut svg = header(groups.len() as f64);
    for (g, (metric, values)) in groups.iter().enumerate() {
        let p = Panel {
            top: g as f64 * PANEL_HEIGHT,
            x_max: targets.len() as f64,
            y_max: nice_max(values.iter().flatten().copied().fold(0.0, f64::max)),
        };
        axes(&mut svg, &p, metric, "", "");
        for (i, (target, v)) in targets.iter().zip(values).enumerate() {
            let (x0, x1) = (p.x(i as f64 + 0.2), p.x(i as f64 + 0.8));
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{target}</text>"#,
                (x0 + x1) / 2.0,
                p.y(0.0) + 16.0
            );
            let Some(v) = v else { continue };
            let (y, y0) = (p.y(*v), p.y(0.0));
            let _ = write!(
                svg,
                r#"<rect x="{x0}" y="{y}" width="{}" height="{}" fill="{}"/><text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
                x1 - x0,
                y0 - y,
                COLORS[i % COLORS.len()],
                (x0 + x1) / 2.0,
                y - 4.0,
                trim(*v)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn header(panels: f64) -> String {
    let h = PANEL_HEIGHT * panels;
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_maxima_are_round_and_cover_the_value() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(1_000.0), 1_000.0);
    }

    #[test]
    fn latency_chart_has_both_panels_and_a_line_per_series() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).unwrap();
        for v in 1..1_000 {
            h.record(v * 10).unwrap();
        }
        let svg = latency_svg("run", &[(0.0, h.clone()), (1.0, h.clone())], &h);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("latency distribution"));
    }
}
