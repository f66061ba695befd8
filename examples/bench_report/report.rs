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

/// The sweep as an SVG chart: ms per cotangent against K, log-log.
pub fn draw(sweep: &Sweep, path: &str, adapter: &str) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let all: Vec<f64> = sweep
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
        .collect();
    let lo = all.iter().cloned().fold(f64::MAX, f64::min).max(1e-6) / 2.0;
    let hi = all.iter().cloned().fold(0.0, f64::max) * 2.0;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("ms per row vs K — {adapter}"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..1024f64).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("K (cotangents, tangents or directions; W5: rows = n)")
        .y_desc("ms per cotangent")
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
    for ((name, points), color) in sweep.series.iter().zip(colors) {
        let pts: Vec<(f64, f64)> = points.iter().map(|&(k, v)| (k as f64, v)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
