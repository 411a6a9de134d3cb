//! The report's plots, as SVG text drawn with plotters (text is SVG `<text>`: no font
//! files). Pure; each function returns `None` when it has nothing to draw.

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Curve, RenderError};
use crate::report::LeaderboardRow;

/// A run's colour in the curves: Tableau's ten, in turn.
pub fn run_color(k: usize) -> RGBColor {
    const P: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = P[k % P.len()];
    RGBColor(r, g, b)
}

/// A colour as CSS.
pub fn css(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Viridis-like: `t` in [0, 1] from dark purple (worst) to yellow (best).
pub fn ramp(t: f64) -> RGBColor {
    const S: [(f64, f64, f64); 5] =
        [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * (S.len() - 1) as f64;
    let i = (t.floor() as usize).min(S.len() - 2);
    let f = t - i as f64;
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(mix(S[i].0, S[i + 1].0), mix(S[i].1, S[i + 1].1), mix(S[i].2, S[i + 1].2))
}

/// The points of a curve, thinned to at most `max` (the last one kept).
pub fn thin<T: Copy>(points: &[T], max: usize) -> Vec<T> {
    if points.len() <= max || max < 2 {
        return points.to_vec();
    }
    let stride = points.len().div_ceil(max - 1);
    let mut out: Vec<T> = points.iter().step_by(stride).copied().collect();
    if !(points.len() - 1).is_multiple_of(stride) {
        out.extend(points.last().copied());
    }
    out
}

/// The Pareto front of `(cost, score)` points: those no other point beats on both (at most the
/// cost and at least the score, better on one), by cost. NaN points are never on it.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> =
        (0..points.len()).filter(|&i| points[i].0.is_finite() && points[i].1.is_finite()).collect();
    // Cheapest first; at one cost the best score first.
    order.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(points[b].1.total_cmp(&points[a].1)));
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in order {
        if points[i].1 > best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn fail<E: std::fmt::Display>(plot: &'static str) -> impl Fn(E) -> RenderError {
    move |e| RenderError { plot, message: e.to_string() }
}

/// Draws on a `w`×`h` SVG and returns its text.
fn svg(
    plot: &'static str,
    w: u32,
    h: u32,
    draw: impl FnOnce(&Area<'_>) -> Result<(), RenderError>,
) -> Result<String, RenderError> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
        draw(&root)?;
        root.present().map_err(fail(plot))?;
    }
    // Inline SVG in HTML needs no namespace; without it the page names no URL at all.
    Ok(s.replace(" xmlns=\"http://www.w3.org/2000/svg\"", ""))
}

/// Which loss a curves plot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    Train,
    Valid,
}

/// The loss curves as a stack: the axes, and each run's curve on a transparent layer of the
/// same size and coordinates (`layers[k]` is run `k`'s).
pub struct Layered {
    pub width: u32,
    pub height: u32,
    pub base: String,
    pub layers: Vec<(usize, String)>,
}

const CURVE_W: u32 = 600;
const CURVE_H: u32 = 360;
/// The most points a run's curve is drawn with.
const CURVE_POINTS: usize = 160;

/// The lowest loss the curves' log axis shows.
const LOSS_FLOOR: f64 = 0.01;

/// The loss curves of `runs` (`stopped[k]`: run `k`'s job was ended by early stopping).
pub fn loss_layers(runs: &[&Curve], stopped: &[bool], which: Loss) -> Result<Option<Layered>, RenderError> {
    let plot = if which == Loss::Train { "training loss" } else { "validation loss" };
    let points = |c: &Curve| -> Vec<(f64, f64)> {
        let raw = if which == Loss::Train { &c.train } else { &c.valid };
        let pts: Vec<(f64, f64)> =
            raw.iter().filter(|p| p.1.is_finite() && p.1 > 0.0).map(|&(s, l)| (s as f64, l)).collect();
        thin(&pts, CURVE_POINTS)
    };
    let all: Vec<Vec<(f64, f64)>> = runs.iter().map(|c| points(c)).collect();
    let flat = all.iter().flatten();
    let xmax = flat.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let (ylo, yhi) = flat.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    if !ylo.is_finite() {
        return Ok(None);
    }
    // Losses near zero (a memorised training set) sit on the floor of the log axis.
    let ylo = ylo.max(LOSS_FLOOR);
    let (ylo, yhi) = (ylo * 0.9, (yhi * 1.1).max(ylo * 1.2));
    let all: Vec<Vec<(f64, f64)>> =
        all.into_iter().map(|pts| pts.into_iter().map(|(x, y)| (x, y.max(ylo))).collect()).collect();
    let base = svg(plot, CURVE_W, CURVE_H, |root| {
        root.fill(&WHITE).map_err(fail(plot))?;
        let mut c = curve_chart(root, plot, xmax, (ylo, yhi))?;
        c.configure_mesh()
            .x_desc("step")
            .y_desc(format!("{plot} (log axis)"))
            .y_label_formatter(&|v| short_number(*v))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(fail(plot))?;
        Ok(())
    })?;
    let mut layers = Vec::new();
    for (k, pts) in all.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let color = run_color(k);
        let layer = svg(plot, CURVE_W, CURVE_H, |root| {
            let mut c = curve_chart(root, plot, xmax, (ylo, yhi))?;
            c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2))).map_err(fail(plot))?;
            let marks: Vec<(f64, f64)> = runs[k]
                .checkpoints
                .iter()
                .filter_map(|&(s, _, t, v)| Some((s as f64, if which == Loss::Train { t } else { v }?)))
                .filter(|p| p.1 > 0.0 && p.1.is_finite())
                .collect();
            c.draw_series(marks.iter().map(|&p| Circle::new(p, 4, color.stroke_width(2)))).map_err(fail(plot))?;
            if let (true, Some(&last)) = (stopped.get(k).copied().unwrap_or(false), pts.last()) {
                c.draw_series([Cross::new(last, 6, BLACK.stroke_width(2))]).map_err(fail(plot))?;
            }
            Ok(())
        })?;
        layers.push((k, layer));
    }
    Ok(Some(Layered { width: CURVE_W, height: CURVE_H, base, layers }))
}

type CurveChart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// The coordinates of a curves plot: the base and every layer are built alike, so they line up.
fn curve_chart<'a, 'b>(
    root: &'a Area<'b>,
    plot: &'static str,
    xmax: f64,
    (ylo, yhi): (f64, f64),
) -> Result<CurveChart<'a, 'b>, RenderError> {
    ChartBuilder::on(root)
        .margin(12)
        .caption(plot, ("sans-serif", 16))
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..xmax, (ylo..yhi).log_scale())
        .map_err(fail(plot))
}

/// An axis of the parallel-coordinates plot: its name, each row's value, whether it is logarithmic.
struct Axis {
    name: String,
    values: Vec<Option<f64>>,
    log: bool,
}

impl Axis {
    fn range(&self) -> Option<(f64, f64)> {
        let f = |v: f64| if self.log { v.ln() } else { v };
        let vals = self.values.iter().flatten().filter(|v| !self.log || **v > 0.0).map(|&v| f(v));
        let (lo, hi) = vals.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        lo.is_finite().then_some((lo, hi))
    }

    /// `v` on [0, 1] along the axis.
    fn place(&self, v: f64, (lo, hi): (f64, f64)) -> f64 {
        let v = if self.log { v.ln() } else { v };
        if hi > lo { (v - lo) / (hi - lo) } else { 0.5 }
    }
}

/// A tick or axis value, short: `8`, `0.1`, `0.772`, `1.2e6`.
fn short_number(v: f64) -> String {
    if v == v.round() && v.abs() < 1e6 {
        format!("{v}")
    } else if v.abs() >= 1e6 {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0');
        s.trim_end_matches('.').to_string()
    }
}

/// The scored runs: the rows a plot of the metric shows.
fn scored(rows: &[LeaderboardRow]) -> Vec<&LeaderboardRow> {
    rows.iter().filter(|r| r.kind == "run" && r.score.is_some() && r.config.is_some()).collect()
}

/// Parallel coordinates: an axis per hyperparameter that varies, and the metric; a line per
/// scored run coloured by the metric.
pub fn parallel(rows: &[LeaderboardRow], metric: &str) -> Result<Option<String>, RenderError> {
    let runs = scored(rows);
    if runs.is_empty() {
        return Ok(None);
    }
    let mut names = vec![crate::space::N_EPOCHS.to_string()];
    names.extend(crate::run::shown_names(runs.iter().filter_map(|r| r.config.as_ref())));
    names.push(crate::space::SEED.to_string());
    let mut axes: Vec<Axis> = names
        .iter()
        .map(|n| Axis {
            name: crate::space::short(n).to_string(),
            values: runs
                .iter()
                .map(|r| {
                    let c = r.config.as_ref()?;
                    match n.as_str() {
                        crate::space::N_EPOCHS => c.n_epochs.map(f64::from),
                        crate::space::SEED => Some(c.seed as f64),
                        other => c.float(other),
                    }
                })
                .collect(),
            log: n.starts_with("learning_rate"),
        })
        .filter(|a| a.range().is_some_and(|(lo, hi)| hi > lo))
        .collect();
    axes.push(Axis { name: metric.to_string(), values: runs.iter().map(|r| r.score).collect(), log: false });
    let ranges: Vec<(f64, f64)> = axes.iter().map(|a| a.range().unwrap_or((0.0, 1.0))).collect();
    let k = axes.len();
    let w = (120 * k as u32).clamp(520, 1200);
    let plot = "parallel coordinates";
    let metric_range = ranges[k - 1];
    let mut order: Vec<usize> = (0..runs.len()).collect();
    // The best drawn last, on top.
    order.sort_by(|&a, &b| runs[a].score.unwrap_or(0.0).total_cmp(&runs[b].score.unwrap_or(0.0)));
    svg(plot, w, 380, |root| {
        root.fill(&WHITE).map_err(fail(plot))?;
        let mut c = ChartBuilder::on(root)
            .margin_left(50)
            .margin_right(50)
            .margin_top(36)
            .margin_bottom(28)
            .build_cartesian_2d(-0.02f64..(k as f64 - 1.0).max(1.0) + 0.02, 0f64..1f64)
            .map_err(fail(plot))?;
        let alpha = if runs.len() > 100 { 0.45 } else { 0.85 };
        for &i in &order {
            let t = axes[k - 1].place(runs[i].score.unwrap_or(0.0), metric_range);
            let line: Vec<(f64, f64)> = axes
                .iter()
                .zip(&ranges)
                .enumerate()
                .filter_map(|(j, (a, r))| Some((j as f64, a.place(a.values[i]?, *r))))
                .collect();
            c.draw_series([PathElement::new(line, ramp(t).mix(alpha).stroke_width(2))]).map_err(fail(plot))?;
        }
        let top = ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
        let under = ("sans-serif", 11).into_font().color(&RGBColor(80, 80, 80)).pos(Pos::new(HPos::Center, VPos::Top));
        for (j, (a, r)) in axes.iter().zip(&ranges).enumerate() {
            let x = j as f64;
            c.draw_series([PathElement::new(vec![(x, 0.0), (x, 1.0)], BLACK.stroke_width(1))]).map_err(fail(plot))?;
            let (lo, hi) = if a.log { (r.0.exp(), r.1.exp()) } else { *r };
            let name = if a.log { format!("{} (log)", a.name) } else { a.name.clone() };
            let label_hi = format!("{name}: {}", short_number(hi));
            c.draw_series([Text::new(label_hi, (x, 1.0), top.clone())]).map_err(fail(plot))?;
            c.draw_series([Text::new(short_number(lo), (x, 0.0), under.clone())]).map_err(fail(plot))?;
        }
        Ok(())
    })
    .map(Some)
}

/// What a tradeoff plot puts on its x axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    Tokens,
    Usd,
}

/// The metric against trained tokens (or cost) with 95 % intervals and the Pareto front;
/// `pick` (a row index) is starred. `None` when no scored run has the cost (for USD: none
/// above zero).
pub fn tradeoff(
    rows: &[LeaderboardRow],
    metric: &str,
    x: Cost,
    pick: Option<usize>,
) -> Result<Option<String>, RenderError> {
    let cost = |r: &LeaderboardRow| match x {
        Cost::Tokens => r.trained_tokens.map(|t| t as f64),
        Cost::Usd => r.cost_usd,
    };
    let pts: Vec<(usize, f64, f64, f64, f64)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == "run" || r.kind == "checkpoint")
        .filter_map(|(i, r)| {
            let s = r.score?;
            Some((i, cost(r)?, s, r.ci_low.unwrap_or(s), r.ci_high.unwrap_or(s)))
        })
        .filter(|p| p.1.is_finite())
        .collect();
    if pts.is_empty() || (x == Cost::Usd && pts.iter().all(|p| p.1 <= 0.0)) {
        return Ok(None);
    }
    let plot = if x == Cost::Tokens { "metric vs tokens" } else { "metric vs cost" };
    let xmax = pts.iter().map(|p| p.1).fold(0.0, f64::max) * 1.05;
    let ylo = pts.iter().map(|p| p.3).fold(f64::INFINITY, f64::min);
    let yhi = pts.iter().map(|p| p.4).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((yhi - ylo) * 0.05).max(0.01);
    let front_at: Vec<usize> = pareto_front(&pts.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>());
    let xdesc = if x == Cost::Tokens { "trained tokens" } else { "cost (USD)" };
    svg(plot, 560, 380, |root| {
        root.fill(&WHITE).map_err(fail(plot))?;
        let mut c = ChartBuilder::on(root)
            .margin(12)
            .caption(format!("{metric} vs {xdesc}"), ("sans-serif", 16))
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..xmax.max(1e-9), (ylo - pad)..(yhi + pad))
            .map_err(fail(plot))?;
        c.configure_mesh()
            .x_desc(xdesc)
            .y_desc(metric)
            .x_label_formatter(&|v| short_number(*v))
            .x_labels(6)
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(fail(plot))?;
        let bar = RGBColor(120, 120, 120).mix(0.6);
        c.draw_series(pts.iter().map(|p| PathElement::new(vec![(p.1, p.3), (p.1, p.4)], bar.stroke_width(1))))
            .map_err(fail(plot))?;
        let front: Vec<(f64, f64)> = front_at.iter().map(|&j| (pts[j].1, pts[j].2)).collect();
        let mut steps = Vec::new();
        for (j, p) in front.iter().enumerate() {
            if j > 0 {
                steps.push((p.0, front[j - 1].1));
            }
            steps.push(*p);
        }
        c.draw_series([PathElement::new(steps, RGBColor(214, 39, 40).stroke_width(2))]).map_err(fail(plot))?;
        c.draw_series(pts.iter().map(|p| Circle::new((p.1, p.2), 4, RGBColor(31, 119, 180).mix(0.8).filled())))
            .map_err(fail(plot))?;
        c.draw_series(front.iter().map(|&p| Circle::new(p, 5, RGBColor(214, 39, 40).stroke_width(2))))
            .map_err(fail(plot))?;
        if let Some(p) = pts.iter().find(|p| Some(p.0) == pick) {
            let star =
                ("sans-serif", 22).into_font().color(&RGBColor(42, 138, 42)).pos(Pos::new(HPos::Center, VPos::Center));
            c.draw_series([Text::new("★", (p.1, p.2), star)]).map_err(fail(plot))?;
            c.draw_series([Circle::new((p.1, p.2), 8, RGBColor(42, 138, 42).stroke_width(2))]).map_err(fail(plot))?;
        }
        Ok(())
    })
    .map(Some)
}

/// Successive halving: each scored run's metric at its rung, a line from the run it continued.
pub fn rungs(rows: &[LeaderboardRow], metric: &str) -> Result<Option<String>, RenderError> {
    let runs: Vec<&LeaderboardRow> =
        rows.iter().filter(|r| r.kind == "run" && r.rung.is_some() && r.score.is_some()).collect();
    let Some(last) = runs.iter().filter_map(|r| r.rung).max() else { return Ok(None) };
    let plot = "rungs";
    let (ylo, yhi) =
        runs.iter().filter_map(|r| r.score).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| (a.min(s), b.max(s)));
    let pad = ((yhi - ylo) * 0.08).max(0.01);
    let at = |r: &LeaderboardRow| (f64::from(r.rung.unwrap_or(0)), r.score.unwrap_or(0.0));
    svg(plot, 480, 360, |root| {
        root.fill(&WHITE).map_err(fail(plot))?;
        let mut c = ChartBuilder::on(root)
            .margin(12)
            .caption(format!("{metric} by rung"), ("sans-serif", 16))
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.5f64..f64::from(last) + 0.5, (ylo - pad)..(yhi + pad))
            .map_err(fail(plot))?;
        c.configure_mesh()
            .x_desc("rung")
            .y_desc(metric)
            .x_labels(last as usize + 2)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-9 && *x >= 0.0 { format!("{x:.0}") } else { String::new() }
            })
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(fail(plot))?;
        for r in &runs {
            let Some(src) = runs.iter().find(|s| s.run_id.is_some() && s.run_id == r.source_run && s.rung < r.rung)
            else {
                continue;
            };
            c.draw_series([PathElement::new(vec![at(src), at(r)], RGBColor(150, 150, 150).stroke_width(1))])
                .map_err(fail(plot))?;
        }
        let color =
            |r: &LeaderboardRow| if r.stopped_early.is_some() { RGBColor(214, 39, 40) } else { RGBColor(31, 119, 180) };
        c.draw_series(runs.iter().map(|r| Circle::new(at(r), 5, color(r).filled()))).map_err(fail(plot))?;
        Ok(())
    })
    .map(Some)
}

/// The seed groups, one row each (a member), best mean first, with the configuration's name.
pub fn seed_groups(rows: &[LeaderboardRow]) -> Vec<(String, &LeaderboardRow)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut groups: Vec<(String, &LeaderboardRow)> = rows
        .iter()
        .filter(|r| r.seed_group.is_some())
        .filter(|r| seen.insert((r.origin.clone(), r.config.as_ref().map(|c| c.key(true)))))
        .map(|r| {
            let texts = r.hyperparameter_texts();
            let name: Vec<String> = texts
                .iter()
                .filter(|(n, _)| n != crate::space::SEED)
                .map(|(n, v)| format!("{}={v}", crate::space::short(n)))
                .collect();
            (name.join(" "), r)
        })
        .collect();
    groups.sort_by(|a, b| {
        let m = |r: &LeaderboardRow| r.seed_group.as_ref().map_or(0.0, |g| g.mean);
        m(b.1).total_cmp(&m(a.1))
    });
    groups
}

/// Seed replicates: per configuration, each seed's metric, the mean and the range.
pub fn seeds(rows: &[LeaderboardRow], metric: &str) -> Result<Option<String>, RenderError> {
    let groups = seed_groups(rows);
    if groups.is_empty() {
        return Ok(None);
    }
    let plot = "seeds";
    let same = |a: &LeaderboardRow, b: &LeaderboardRow| {
        a.origin == b.origin && a.config.as_ref().map(|c| c.key(true)) == b.config.as_ref().map(|c| c.key(true))
    };
    let members: Vec<Vec<f64>> = groups
        .iter()
        .map(|(_, g)| {
            rows.iter()
                .filter(|r| r.kind == "run" && r.seed_group.is_some() && same(r, g))
                .filter_map(|r| r.score)
                .collect()
        })
        .collect();
    let (ylo, yhi) =
        members.iter().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &s| (a.min(s), b.max(s)));
    let pad = ((yhi - ylo) * 0.1).max(0.01);
    let n = groups.len();
    svg(plot, (120 * n as u32 + 120).clamp(360, 1100), 340, |root| {
        root.fill(&WHITE).map_err(fail(plot))?;
        let mut c = ChartBuilder::on(root)
            .margin(12)
            .caption(format!("{metric} over seeds"), ("sans-serif", 16))
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, (ylo - pad)..(yhi + pad))
            .map_err(fail(plot))?;
        c.configure_mesh()
            .x_desc("configuration (by mean, best first)")
            .y_desc(metric)
            .x_labels(n + 1)
            .x_label_formatter(&|x| {
                if (x - x.round()).abs() < 1e-9 && *x >= 0.0 { format!("#{:.0}", x + 1.0) } else { String::new() }
            })
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(fail(plot))?;
        for (j, ((_, r), scores)) in groups.iter().zip(&members).enumerate() {
            let Some(g) = &r.seed_group else { continue };
            let x = j as f64;
            c.draw_series([PathElement::new(vec![(x, g.min), (x, g.max)], RGBColor(120, 120, 120).stroke_width(2))])
                .map_err(fail(plot))?;
            c.draw_series([PathElement::new(vec![(x - 0.2, g.mean), (x + 0.2, g.mean)], BLACK.stroke_width(3))])
                .map_err(fail(plot))?;
            c.draw_series(scores.iter().map(|&s| Circle::new((x, s), 5, RGBColor(31, 119, 180).mix(0.8).filled())))
                .map_err(fail(plot))?;
        }
        Ok(())
    })
    .map(Some)
}
