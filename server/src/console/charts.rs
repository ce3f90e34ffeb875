//! Pictures for the console, drawn on the server as SVG: bar charts of the figures (plotters)
//! and the map of incidents over the grid areas (no tile server needed).

use std::fmt::Write as _;

use plotters::prelude::*;

const FONT: &str = "Noto Sans CJK SC, Microsoft YaHei, sans-serif";

/// A bar chart. `max` fixes the top of the scale (100 for rates).
pub fn bars(title: &str, y_desc: &str, bars: &[(String, f64)], max: Option<f64>) -> String {
    let mut svg = String::new();
    if let Err(e) = draw_bars(&mut svg, title, y_desc, bars, max) {
        tracing::warn!(error = %e, "chart failed");
        return String::new();
    }
    svg
}

fn draw_bars(
    out: &mut String,
    title: &str,
    y_desc: &str,
    bars: &[(String, f64)],
    max: Option<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = bars.len().max(1);
    let top = max.unwrap_or_else(|| (bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.2).max(1.0));
    let root = SVGBackend::with_string(out, (600, 280)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 17))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(48)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.chars().take(6).collect()).unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc(y_desc)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .draw()?;
    let colour = RGBColor(37, 99, 235);
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        let mut bar = Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)], colour.filled());
        bar.set_margin(0, 0, 10, 10);
        bar
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        Text::new(format!("{}", (v * 10.0).round() / 10.0), (SegmentValue::CenterOf(i), *v), (FONT, 12).into_font().color(&BLACK))
    }))?;
    root.present()?;
    Ok(())
}

/// A grid area to draw: its polygon in longitude/latitude.
#[derive(Debug, Clone)]
pub struct Area {
    pub code: String,
    pub name: String,
    pub village: String,
    pub polygon: Vec<[f64; 2]>,
}

/// An incident on the map.
#[derive(Debug, Clone)]
pub struct Pin {
    pub id: String,
    pub label: String,
    pub point: [f64; 2],
    /// `overdue`, `open` or `closed`.
    pub state: &'static str,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Where a pin goes when its record has no position: inside its grid, spread by the record id.
pub fn point_in(area: &Area, id: &str) -> [f64; 2] {
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for p in &area.polygon {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let h = id.bytes().fold(2_166_136_261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619));
    let fx = 0.2 + 0.6 * f64::from(h & 0xffff) / 65_535.0;
    let fy = 0.2 + 0.6 * f64::from(h >> 16) / 65_535.0;
    [lo[0] + (hi[0] - lo[0]) * fx, lo[1] + (hi[1] - lo[1]) * fy]
}

const VILLAGE_FILLS: [&str; 8] = ["#e0f2fe", "#dcfce7", "#fef9c3", "#fce7f3", "#ede9fe", "#ffedd5", "#e2e8f0", "#ccfbf1"];

/// The map: grid polygons (coloured by village, labelled) and incident pins linking to the record.
pub fn map(areas: &[Area], pins: &[Pin], width: f64, height: f64) -> String {
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for p in areas.iter().flat_map(|a| &a.polygon).chain(pins.iter().map(|p| &p.point)) {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    if lo[0] > hi[0] {
        return String::new();
    }
    // Equirectangular, corrected for latitude, fitted to the frame with a margin.
    let kx = ((lo[1] + hi[1]) / 2.0).to_radians().cos();
    let (w, h) = (((hi[0] - lo[0]) * kx).max(1e-6), (hi[1] - lo[1]).max(1e-6));
    let pad = 16.0;
    let scale = ((width - 2.0 * pad) / w).min((height - 2.0 * pad) / h);
    let xy = |p: &[f64; 2]| (pad + (p[0] - lo[0]) * kx * scale, pad + (hi[1] - p[1]) * scale);
    let mut villages: Vec<&str> = areas.iter().map(|a| a.village.as_str()).collect();
    villages.dedup();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" class="map" role="img" aria-label="事件地图">"#
    );
    for a in areas {
        let fill = VILLAGE_FILLS[villages.iter().position(|v| *v == a.village).unwrap_or(0) % VILLAGE_FILLS.len()];
        let points: Vec<String> = a.polygon.iter().map(&xy).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            s,
            r##"<polygon points="{}" fill="{fill}" stroke="#64748b" stroke-width="1"><title>{}</title></polygon>"##,
            points.join(" "),
            esc(&a.name)
        );
    }
    for a in areas {
        let n = a.polygon.len().max(1) as f64;
        let c = [a.polygon.iter().map(|p| p[0]).sum::<f64>() / n, a.polygon.iter().map(|p| p[1]).sum::<f64>() / n];
        let (x, y) = xy(&c);
        let _ = write!(s, r#"<text x="{x:.1}" y="{y:.1}" class="area-label">{}</text>"#, esc(&a.name));
    }
    for p in pins {
        let (x, y) = xy(&p.point);
        let _ = write!(
            s,
            r#"<a href="/console/records/{}"><circle cx="{x:.1}" cy="{y:.1}" r="7" class="pin pin-{}"><title>{}</title></circle></a>"#,
            esc(&p.id),
            p.state,
            esc(&p.label)
        );
    }
    s.push_str("</svg>");
    s
}
