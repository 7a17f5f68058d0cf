//! Line charts as inline SVG (for the HTML report) and as PNG (drawn pixel by pixel with an
//! 8x8 bitmap font, so no system fonts or external tools are needed).

use std::fmt::Write;

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub color: (u8, u8, u8),
    /// Points in x order. A point whose y is not finite (NaN) is a gap: nothing was measured
    /// there, and the line breaks instead of dropping to zero.
    pub points: Vec<(f64, f64)>,
    /// Line width in pixels; a wide line drawn first stays visible under a thin one with the
    /// same values.
    pub width: f64,
}

impl Series {
    pub fn new(name: &str, color: (u8, u8, u8), points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            color,
            points,
            width: 1.8,
        }
    }

    /// Runs of consecutive measured points, split at the gaps.
    pub fn runs(&self) -> impl Iterator<Item = &[(f64, f64)]> {
        self.points
            .split(|p| !p.1.is_finite())
            .filter(|r| !r.is_empty())
    }
}

#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A horizontal reference line (value, label), e.g. a limit.
    pub reference: Option<(f64, String)>,
    /// Vertical lines at moments (x, label), e.g. when a process was killed.
    pub markers: Vec<(f64, String)>,
}

/// Colour of the vertical markers.
const MARK: (u8, u8, u8) = (90, 90, 90);

pub const COLORS: [(u8, u8, u8); 5] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
];

impl Chart {
    fn bounds(&self) -> (f64, f64, f64) {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        // An axis with nothing above zero still gets a unit scale, not five labels of 0.00.
        let unit = |m: f64| if m > 0.0 { m } else { 1.0 };
        let marks = self.markers.iter().map(|m| m.0);
        let x_max = unit(xs.chain(marks).fold(0.0f64, f64::max));
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite());
        let mut y_max = ys.fold(0.0f64, f64::max);
        if let Some((r, _)) = &self.reference {
            y_max = y_max.max(*r);
        }
        (0.0, x_max, nice(unit(y_max) * 1.05))
    }
}

/// Rounds up to a round multiple of a power of ten (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8), so
/// the axis wastes at most a quarter of the plot (a 2.1M backlog gets 2.5M, not 5M).
fn nice(v: f64) -> f64 {
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

pub fn svg(c: &Chart, w: u32, h: u32) -> String {
    let (l, r, t, b) = (70.0, 20.0, 30.0, 45.0);
    let (pw, ph) = (w as f64 - l - r, h as f64 - t - b);
    let (_, x_max, y_max) = c.bounds();
    let x = |v: f64| l + v / x_max * pw;
    let y = |v: f64| t + ph - v / y_max * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{l}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(&c.title)
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/>"##,
            l + pw
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            l - 6.0,
            yy + 4.0,
            fmt_num(v)
        );
        let xv = x_max * i as f64 / 4.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(xv),
            t + ph + 16.0,
            fmt_num(xv)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
    );
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        h as f64 - 8.0,
        esc(&c.x_label)
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{:.1}" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"#,
        t + ph / 2.0,
        t + ph / 2.0,
        esc(&c.y_label)
    );
    if let Some((v, label)) = &c.reference {
        let yy = y(*v);
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#d62728" stroke-dasharray="6 4"/>"##,
            l + pw
        );
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#d62728">{}</text>"##,
            l + pw - 4.0,
            yy - 4.0,
            esc(label)
        );
    }
    svg_markers(&mut s, c, &x, t, ph);
    for (i, se) in c.series.iter().enumerate() {
        let (cr, cg, cb) = se.color;
        for run in se.runs() {
            if let [p] = run {
                // One measured interval between gaps: a line needs two points, so a dot.
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="rgb({cr},{cg},{cb})"/>"#,
                    x(p.0),
                    y(p.1),
                    se.width
                );
                continue;
            }
            let pts: String = run
                .iter()
                .map(|p| format!("{:.1},{:.1} ", x(p.0), y(p.1)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="rgb({cr},{cg},{cb})" stroke-width="{}" points="{pts}"/>"#,
                se.width
            );
        }
        let lx = l + 10.0 + i as f64 * 170.0;
        let _ = write!(
            s,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="3" fill="rgb({cr},{cg},{cb})"/>"#,
            t + 8.0
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 16.0,
            t + 13.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// The markers as dashed vertical lines with their labels, stepped down so that neighbouring
/// ones do not overlap.
fn svg_markers(s: &mut String, c: &Chart, x: &dyn Fn(f64) -> f64, t: f64, ph: f64) {
    let (mr, mg, mb) = MARK;
    for (n, (at, label)) in c.markers.iter().enumerate() {
        let xx = x(*at);
        let _ = write!(
            s,
            r#"<line x1="{xx:.1}" y1="{t}" x2="{xx:.1}" y2="{:.1}" stroke="rgb({mr},{mg},{mb})" stroke-dasharray="3 3"/>"#,
            t + ph
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="rgb({mr},{mg},{mb})">{}</text>"#,
            xx + 3.0,
            t + 28.0 + 12.0 * (n % 8) as f64,
            esc(label)
        );
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, c: (u8, u8, u8)) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i] = c.0;
            self.px[i + 1] = c.1;
            self.px[i + 2] = c.2;
        }
    }

    /// A line `width` pixels wide (1, 2 or more), drawn as offset copies.
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: (u8, u8, u8), width: u8) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
        for i in 0..=steps {
            let f = i as f64 / steps as f64;
            let (x, y) = (
                (x0 + (x1 - x0) * f).round() as i64,
                (y0 + (y1 - y0) * f).round() as i64,
            );
            self.set(x, y, c);
            if width >= 2 {
                self.set(x, y + 1, c);
                self.set(x + 1, y, c);
            }
            if width >= 3 {
                self.set(x, y - 1, c);
                self.set(x - 1, y, c);
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: (u8, u8, u8)) {
        for (n, ch) in s.chars().enumerate() {
            let glyph = font8x8::legacy::BASIC_LEGACY
                .get(ch as usize)
                .copied()
                .unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.set(x + n as i64 * 8 + col, y + row as i64, c);
                    }
                }
            }
        }
    }
}

pub fn png(c: &Chart, w: u32, h: u32) -> Result<Vec<u8>, String> {
    let (l, r, t, b) = (80.0, 20.0, 40.0, 40.0);
    let (pw, ph) = (w as f64 - l - r, h as f64 - t - b);
    let (_, x_max, y_max) = c.bounds();
    let x = |v: f64| l + v / x_max * pw;
    let y = |v: f64| t + ph - v / y_max * ph;
    let mut cv = Canvas::new(w as usize, h as usize);
    let grey = (200, 200, 200);
    let ink = (40, 40, 40);
    cv.text(l as i64, 10, &c.title, ink);
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        cv.line((l, y(v)), (l + pw, y(v)), grey, 1);
        let label = fmt_num(v);
        cv.text(
            l as i64 - 6 - 8 * label.len() as i64,
            y(v) as i64 - 4,
            &label,
            ink,
        );
        let xv = x_max * i as f64 / 4.0;
        let xl = fmt_num(xv);
        cv.text(
            x(xv) as i64 - 4 * xl.len() as i64,
            (t + ph) as i64 + 6,
            &xl,
            ink,
        );
    }
    cv.line((l, t), (l, t + ph), ink, 1);
    cv.line((l, t + ph), (l + pw, t + ph), ink, 1);
    cv.text(
        (l + pw / 2.0) as i64 - 4 * c.x_label.len() as i64,
        h as i64 - 14,
        &c.x_label,
        ink,
    );
    cv.text(4, (t - 14.0) as i64, &c.y_label, ink);
    if let Some((v, label)) = &c.reference {
        let red = (214, 39, 40);
        let mut xx = l;
        while xx < l + pw {
            cv.line((xx, y(*v)), ((xx + 6.0).min(l + pw), y(*v)), red, 1);
            xx += 10.0;
        }
        cv.text(
            (l + pw) as i64 - 8 * label.len() as i64 - 4,
            y(*v) as i64 - 12,
            label,
            red,
        );
    }
    for (n, (at, label)) in c.markers.iter().enumerate() {
        let xx = x(*at);
        let mut yy = t;
        while yy < t + ph {
            cv.line((xx, yy), (xx, (yy + 3.0).min(t + ph)), MARK, 1);
            yy += 6.0;
        }
        cv.text(
            xx as i64 + 3,
            (t + 24.0 + 10.0 * (n % 8) as f64) as i64,
            label,
            MARK,
        );
    }
    for (i, se) in c.series.iter().enumerate() {
        let width = if se.width > 2.5 { 3 } else { 2 };
        for run in se.runs() {
            if let [p] = run {
                let (cx, cy) = (x(p.0).round() as i64, y(p.1).round() as i64);
                for (dx, dy) in (-1..=1).flat_map(|dx| (-1..=1).map(move |dy| (dx, dy))) {
                    cv.set(cx + dx, cy + dy, se.color);
                }
            }
            for p in run.windows(2) {
                cv.line(
                    (x(p[0].0), y(p[0].1)),
                    (x(p[1].0), y(p[1].1)),
                    se.color,
                    width,
                );
            }
        }
        let lx = l as i64 + 10 + i as i64 * 200;
        for dx in 0..12 {
            cv.set(lx + dx, t as i64 + 10, se.color);
            cv.set(lx + dx, t as i64 + 11, se.color);
        }
        cv.text(lx + 16, t as i64 + 7, &se.name, ink);
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&cv.px).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "throughput".into(),
            x_label: "s".into(),
            y_label: "events/s".into(),
            series: vec![Series::new(
                "applied",
                COLORS[0],
                (0..50).map(|i| (i as f64, (i * i) as f64)).collect(),
            )],
            reference: Some((1000.0, "limit".into())),
            markers: Vec::new(),
        }
    }

    #[test]
    fn markers_are_drawn_and_widen_the_axis() {
        let mut c = chart();
        c.markers = vec![(80.0, "leader killed".into())];
        assert_eq!(c.bounds().1, 80.0);
        let s = svg(&c, 600, 300);
        assert!(s.contains("leader killed") && s.contains("stroke-dasharray=\"3 3\""));
        let p = png(&c, 600, 300).unwrap();
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn svg_and_png_are_well_formed() {
        let s = svg(&chart(), 600, 300);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"));
        assert!(s.contains("polyline") && s.contains("limit"));
        let p = png(&chart(), 600, 300).unwrap();
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn a_gap_breaks_the_line_and_does_not_count_as_zero() {
        let mut c = chart();
        c.reference = None;
        c.series[0].points = vec![
            (0.0, 4.0),
            (1.0, 6.0),
            (2.0, f64::NAN),
            (3.0, 5.0),
            (4.0, 3.0),
        ];
        let s = svg(&c, 600, 300);
        // Two measured runs, two polylines; no point is drawn at the gap.
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(s.matches("<circle").count(), 0);
        assert!(!s.contains("NaN"));
        // The axis is scaled by what was measured (6 rounds up to 8 with the 5% margin).
        assert_eq!(c.bounds().2, 8.0);
        let p = png(&c, 600, 300).unwrap();
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn a_lone_measured_interval_between_gaps_is_a_dot() {
        let mut c = chart();
        c.reference = None;
        c.series[0].points = vec![(0.0, f64::NAN), (1.0, 6.0), (2.0, f64::NAN)];
        let s = svg(&c, 600, 300);
        assert_eq!(s.matches("<circle").count(), 1);
        assert_eq!(s.matches("<polyline").count(), 0);
    }

    #[test]
    fn an_all_zero_series_gets_a_unit_axis() {
        let mut c = chart();
        c.reference = None;
        c.series[0].points = vec![(0.0, 0.0), (0.0, 0.0)];
        let (_, x_max, y_max) = c.bounds();
        assert_eq!((x_max, y_max), (1.0, 1.2));
        assert!(!svg(&c, 600, 300).contains(">0.00<"));
    }

    #[test]
    fn nice_rounds_up() {
        assert_eq!(nice(7.3), 8.0);
        assert_eq!(nice(1.3), 1.5);
        assert_eq!(nice(4000.0), 4000.0);
        assert_eq!(nice(2_100_000.0), 2_500_000.0);
        assert_eq!(nice(8.5), 10.0);
    }
}
