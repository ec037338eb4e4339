//! The picture: latency distribution per region (a CDF, one line per region, on a log time
//! axis) as SVG. A step at a region's local hit latency and another at its miss latency show
//! the hit ratio and the cost of a trip across regions at a glance.

use plotters::prelude::*;

use super::report::RunReport;

/// Line colours that stay apart on white (no yellow), one per region, then around again.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;

/// A line of the chart: a name and its `(ms, share)` points.
pub type Line<'a> = (String, &'a [(f64, f64)]);

/// One line per region of `run`.
pub fn region_lines(run: &RunReport) -> Vec<Line<'_>> {
    run.regions
        .iter()
        .filter(|r| !r.cdf.is_empty())
        .map(|r| (r.region.clone(), r.cdf.as_slice()))
        .collect()
}

/// One line per run, all regions together.
pub fn total_lines<'a>(runs: &[&'a RunReport]) -> Vec<Line<'a>> {
    runs.iter()
        .filter(|r| !r.total.cdf.is_empty())
        .map(|r| (r.label.clone(), r.total.cdf.as_slice()))
        .collect()
}

/// The latency CDF of `lines` as an SVG document.
pub fn latency_svg(title: &str, lines: &[Line<'_>]) -> Result<String, String> {
    let points = lines.iter().flat_map(|(_, cdf)| cdf.iter().map(|p| p.0));
    let (low, high) = points.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (low, high) = if low <= high {
        ((low * 0.8).max(0.01), (high * 1.25).max(low * 2.0))
    } else {
        (0.1, 1000.0)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let fail = |e: &dyn std::fmt::Display| format!("drawing the latency chart: {e}");
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((low..high).log_scale(), 0.0..1.0)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("share of requests at or below")
            .x_label_formatter(&|x| {
                if *x >= 1.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x}")
                }
            })
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, (name, cdf)) in lines.iter().enumerate() {
            let color = color(i);
            // Steps: the share holds until the next bucket.
            let mut steps = Vec::with_capacity(cdf.len() * 2 + 1);
            let mut share = 0.0;
            for &(x, y) in cdf.iter() {
                steps.push((x, share));
                steps.push((x, y));
                share = y;
            }
            chart
                .draw_series(LineSeries::new(steps, color.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

/// The per-second timeline of `run` as an SVG document: requests (solid) and errors (dashed)
/// per region on top, p99 per region below (log scale), each fault a grey vertical line.
pub fn timeline_svg(title: &str, run: &RunReport) -> Result<String, String> {
    let fail = |e: &dyn std::fmt::Display| format!("drawing the timeline: {e}");
    let seconds = run
        .regions
        .iter()
        .map(|r| r.timeline.len())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let most = run
        .regions
        .iter()
        .flat_map(|r| r.timeline.iter().map(|s| s.requests))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let p99s = run
        .regions
        .iter()
        .flat_map(|r| r.timeline.iter().filter_map(|s| s.p99_ms));
    let (low, high) = p99s.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (low, high) = if low <= high {
        ((low * 0.8).max(0.01), (high * 1.25).max(low * 2.0))
    } else {
        (0.1, 1000.0)
    };
    let faults: Vec<f64> = run.faults.iter().map(|f| f.at_s).collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let root = root
            .titled(title, ("sans-serif", 20))
            .map_err(|e| fail(&e))?;
        let (top, bottom) = root.split_vertically(HEIGHT / 2 - 10);
        let mut counts = ChartBuilder::on(&top)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..seconds, 0.0..most * 1.1)
            .map_err(|e| fail(&e))?;
        counts
            .configure_mesh()
            .x_desc("second of the measured part")
            .y_desc("requests (errors dashed)")
            .draw()
            .map_err(|e| fail(&e))?;
        let mut p99 = ChartBuilder::on(&bottom)
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..seconds, (low..high).log_scale())
            .map_err(|e| fail(&e))?;
        p99.configure_mesh()
            .x_desc("second of the measured part")
            .y_desc("p99 ms (log)")
            .draw()
            .map_err(|e| fail(&e))?;
        let grey = RGBColor(150, 150, 150);
        for &at in &faults {
            counts
                .draw_series(LineSeries::new(
                    [(at, 0.0), (at, most * 1.1)],
                    grey.stroke_width(1),
                ))
                .map_err(|e| fail(&e))?;
            p99.draw_series(LineSeries::new(
                [(at, low), (at, high)],
                grey.stroke_width(1),
            ))
            .map_err(|e| fail(&e))?;
        }
        for (i, row) in run.regions.iter().enumerate() {
            let color = color(i);
            let mid = |s: usize| s as f64 + 0.5;
            counts
                .draw_series(LineSeries::new(
                    row.timeline
                        .iter()
                        .enumerate()
                        .map(|(s, t)| (mid(s), t.requests as f64)),
                    color.stroke_width(2),
                ))
                .map_err(|e| fail(&e))?
                .label(row.region.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            counts
                .draw_series(DashedLineSeries::new(
                    row.timeline
                        .iter()
                        .enumerate()
                        .map(|(s, t)| (mid(s), t.errors as f64)),
                    6,
                    4,
                    color.stroke_width(1),
                ))
                .map_err(|e| fail(&e))?;
            p99.draw_series(LineSeries::new(
                row.timeline
                    .iter()
                    .enumerate()
                    .filter_map(|(s, t)| t.p99_ms.map(|v| (mid(s), v))),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?;
        }
        counts
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_a_labelled_line_per_region() {
        let near: Vec<(f64, f64)> = vec![(2.0, 0.5), (3.0, 0.8), (170.0, 1.0)];
        let far: Vec<(f64, f64)> = vec![(2.5, 0.3), (180.0, 0.9), (250.0, 1.0)];
        let lines = vec![
            ("us".to_string(), near.as_slice()),
            ("ap".to_string(), far.as_slice()),
        ];
        let svg = latency_svg("latency per region", &lines).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "latency per region",
            "latency (ms, log scale)",
            "\nus\n",
            "\nap\n",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
        let stroke = |i: usize| {
            let c = color(i);
            format!("stroke=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2)
        };
        // Each region's line, and its sample in the legend.
        assert_eq!(svg.matches(&stroke(0)).count(), 2, "{svg}");
        assert_eq!(svg.matches(&stroke(1)).count(), 2, "{svg}");
        assert!(latency_svg("empty", &[]).unwrap().starts_with("<svg"));
    }
}
