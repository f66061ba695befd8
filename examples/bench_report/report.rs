//! The report's output: the table as it is printed, its JSON form, and
//! the K sweep's SVG chart.

use std::fmt::Write as _;

/// Figures in print order: (section, name, value, unit).
#[derive(Default)]
pub struct Report {
    pub rows: Vec<(String, String, f64, &'static str)>,
}

impl Report {
    pub fn add(&mut self, section: &str, name: &str, value: f64, unit: &'static str) -> f64 {
        println!("  {name:<46} {value:>12.3} {unit}");
        self.rows
            .push((section.to_string(), name.to_string(), value, unit));
        value
    }

    pub fn section(&self, title: &str) {
        println!("\n{title}");
    }

    pub fn json(&self, adapter: &str, sweep: &Sweep) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut j = format!(
            "{{\n  \"adapter\": \"{}\",\n  \"figures\": [\n",
            esc(adapter)
        );
        for (i, (section, name, value, unit)) in self.rows.iter().enumerate() {
            let comma = if i + 1 < self.rows.len() { "," } else { "" };
            let _ = writeln!(
                j,
                "    {{\"section\": \"{}\", \"name\": \"{}\", \"value\": {value}, \"unit\": \"{unit}\"}}{comma}",
                esc(section),
                esc(name)
            );
        }
        j.push_str("  ],\n  \"k_sweep\": {\n");
        for (i, (name, points)) in sweep.series.iter().enumerate() {
            let pts: Vec<String> = points
                .iter()
                .map(|(k, ms)| format!("[{k}, {ms}]"))
                .collect();
            let comma = if i + 1 < sweep.series.len() { "," } else { "" };
            let _ = writeln!(j, "    \"{}\": [{}]{comma}", esc(name), pts.join(", "));
        }
        j.push_str("  }\n}\n");
        j
    }
}

/// ms per cotangent against K (or rows), per series.
#[derive(Default)]
pub struct Sweep {
    pub series: Vec<(String, Vec<(usize, f64)>)>,
}

/// Whether a series runs over the Jacobian's size n (W5) rather than K.
fn over_n(name: &str) -> bool {
    name.starts_with("W5")
}

/// The sweep as an SVG chart of two panels, log-log: ms per row against K
/// (cotangents, tangents or directions: W2, W7, W8) on the left, and ms per
/// Jacobian row against n (W5: n rows) on the right, so no axis means two
/// things.
pub fn draw(sweep: &Sweep, path: &str, adapter: &str) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1300, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&format!("ms per row — {adapter}"), ("sans-serif", 20))?;
    let (left, right) = root.split_horizontally(740);
    let by_k: Vec<_> = sweep.series.iter().filter(|(n, _)| !over_n(n)).collect();
    let by_n: Vec<_> = sweep.series.iter().filter(|(n, _)| over_n(n)).collect();
    panel(
        &left,
        &by_k,
        "K (cotangents, tangents or directions)",
        "ms per row",
        0,
        SeriesLabelPosition::UpperRight,
    )?;
    panel(
        &right,
        &by_n,
        "n (W5: x and y of n elements, n rows)",
        "ms per Jacobian row",
        by_k.len(),
        SeriesLabelPosition::UpperLeft,
    )?;
    root.present()?;
    Ok(())
}

type Series = (String, Vec<(usize, f64)>);

/// One panel: the series' lines and points, log-log, colours from `first`
/// on (so a colour names one series across the chart).
fn panel<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    series: &[&Series],
    x_desc: &str,
    y_desc: &str,
    first: usize,
    legend: plotters::chart::SeriesLabelPosition,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let lo = all().map(|&(_, v)| v).fold(f64::MAX, f64::min).max(1e-6) / 2.0;
    // Headroom above the highest line for the legend.
    let hi = all().map(|&(_, v)| v).fold(0.0, f64::max).max(lo * 4.0) * 8.0;
    let x_lo = all()
        .map(|&(k, _)| k as f64)
        .fold(f64::MAX, f64::min)
        .min(1e9)
        / 1.5;
    let x_hi = all().map(|&(k, _)| k as f64).fold(1.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()?;
    let colors = [
        BLUE,
        RED,
        GREEN,
        MAGENTA,
        CYAN,
        BLACK,
        RGBColor(230, 140, 0),
        RGBColor(120, 60, 160),
    ];
    for (i, (name, points)) in series.iter().enumerate() {
        let color = colors[(first + i) % colors.len()];
        let pts: Vec<(f64, f64)> = points.iter().map(|&(k, v)| (k as f64, v)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
