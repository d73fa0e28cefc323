//! SVG charts with `plotters` (SVG backend only; text is written as SVG `<text>`
//! elements sized by plotters' built-in estimate, so no font library is needed).

use std::path::Path;

use anyhow::{anyhow, ensure, Result};
use plotters::prelude::*;

/// One evaluated file: its label, weight bytes and ΔPPL against the reference (percent).
#[derive(Debug, Clone)]
pub struct QualityPoint {
    /// File name shown beside the point.
    pub label: String,
    /// Stored weight bytes (all tensors).
    pub weight_bytes: u64,
    /// Perplexity change against the reference, in percent.
    pub delta_ppl: f64,
}

fn err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("cannot draw {}: {e}", path.display())
}

/// Pads a (lo, hi) range by 10 % (and to a nonzero width).
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let w = (hi - lo).abs().max(hi.abs() * 0.1).max(1e-9);
    (lo - 0.1 * w, hi + 0.1 * w)
}

/// Draws ΔPPL (%) against weight bytes, one labelled point per file: an 800×500
/// SVG document (`path` names it in messages; write it with `io::write`).
pub fn quality(path: &Path, points: &[QualityPoint]) -> Result<String> {
    ensure!(!points.is_empty(), "nothing to plot: no file was evaluated against a reference");
    let e = err(path);
    let mut svg = String::new();
    let xs = points.iter().map(|p| p.weight_bytes as f64);
    let ys = points.iter().map(|p| p.delta_ppl);
    let (x0, x1) = padded(xs.clone().fold(f64::INFINITY, f64::min), xs.fold(f64::NEG_INFINITY, f64::max));
    let (y0, y1) = padded(ys.clone().fold(0.0, f64::min), ys.fold(0.0, f64::max));
    let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("perplexity change vs weight bytes", ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(&e)?;
    chart.configure_mesh().x_desc("weight bytes").y_desc("ΔPPL vs reference (%)").draw().map_err(&e)?;
    chart
        .draw_series(points.iter().map(|p| Circle::new((p.weight_bytes as f64, p.delta_ppl), 4, BLUE.filled())))
        .map_err(&e)?;
    chart
        .draw_series(points.iter().map(|p| {
            let label = format!("{} ({:+.2}%)", p.label, p.delta_ppl);
            Text::new(label, (p.weight_bytes as f64, p.delta_ppl), ("sans-serif", 12))
        }))
        .map_err(&e)?;
    root.present().map_err(&e)?;
    drop(chart);
    drop(root);
    Ok(svg)
}

/// Draws one bar per tensor (`(name, value)`, e.g. relative RMSE): an SVG
/// document (`path` names it in messages).
pub fn bars(path: &Path, title: &str, y_desc: &str, bars: &[(String, f64)]) -> Result<String> {
    ensure!(!bars.is_empty(), "nothing to plot");
    let e = err(path);
    let mut svg = String::new();
    let top = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-12) * 1.1;
    let n = bars.len();
    let root = SVGBackend::with_string(&mut svg, (((40 + 22 * n) as u32).max(600), 500)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(110)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, 0.0..top)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            bars.get(i).map(|b| b.0.clone()).unwrap_or_default()
        })
        .x_label_style(("sans-serif", 10).into_font().transform(FontTransform::Rotate90))
        .y_desc(y_desc)
        .draw()
        .map_err(&e)?;
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .map(|(i, b)| Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, b.1)], BLUE.mix(0.7).filled())),
        )
        .map_err(&e)?;
    root.present().map_err(&e)?;
    drop(chart);
    drop(root);
    Ok(svg)
}
