//! The sweep report as one self-contained HTML page: the ranked table, loss curves,
//! parallel coordinates, the metric against trained tokens (and cost), rungs, seed
//! spread, the examples where the pick and the runner-up disagree, and what the page
//! shows (sweep file, data hashes, version, date). Pure: it renders a [`Page`] the CLI
//! loaded. Plots are SVG ([`plots`]); the only script sorts the table, and the page
//! reads the same without it (picking curves is plain CSS). Nothing is loaded from
//! anywhere: no URL appears in the output.

pub mod plots;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::{self, LeaderboardRow};

/// A run's training history: its job's losses by step, its checkpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curve {
    /// `(step, training loss)`.
    pub train: Vec<(u64, f64)>,
    /// `(step, validation loss)`.
    pub valid: Vec<(u64, f64)>,
    /// `(step, epoch, training loss, validation loss)` at each checkpoint.
    pub checkpoints: Vec<(u64, u32, Option<f64>, Option<f64>)>,
}

/// `best`'s pick: a row index, its reason and note.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    pub index: usize,
    pub reason: String,
    pub note: Option<String>,
}

/// One example where the pick and the runner-up disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub line: usize,
    pub prompt: String,
    pub reference: String,
    pub reply_pick: String,
    pub reply_other: String,
    pub score_pick: f64,
    pub score_other: f64,
}

/// The pick against the runner-up, example by example.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreements {
    /// The row index of the runner-up.
    pub other: usize,
    pub n_examples: usize,
    pub examples: Vec<Example>,
}

/// A data file the sweep used.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    pub role: String,
    pub path: String,
    pub sha256: String,
}

/// Everything the page shows, loaded.
#[derive(Debug, Clone)]
pub struct Page {
    pub sweep: String,
    pub metric: String,
    /// The other scores (graders, `combined`), a column each after the vs-leader column.
    pub others: Vec<String>,
    pub rows: Vec<LeaderboardRow>,
    pub pick: Option<Pick>,
    /// What the interval and the marks mean (the leaderboard's legend).
    pub legend: String,
    pub decoding: String,
    /// Curves by run id.
    pub curves: BTreeMap<String, Curve>,
    pub disagreements: Option<Disagreements>,
    pub sweep_path: String,
    pub sweep_file: String,
    pub files: Vec<DataFile>,
    pub version: String,
    /// When the page was generated (RFC 3339).
    pub generated: String,
}

/// A plot failed to draw.
#[derive(Debug, thiserror::Error)]
#[error("drawing the {plot} plot: {message}")]
pub struct RenderError {
    pub plot: &'static str,
    pub message: String,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The row's label: `RUN`, `RUN@EPOCH`, `baseline`, or the row's kind.
pub fn label(r: &LeaderboardRow) -> String {
    match (&r.run_id, r.epoch) {
        (Some(id), Some(e)) => format!("{id}@{e}"),
        (Some(id), None) => id.clone(),
        (None, _) if r.is_baseline => "baseline".into(),
        (None, _) => r.model.clone().unwrap_or_else(|| r.kind.clone()),
    }
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1280px;padding:12px 20px;color:#222;background:#fff}
h1{font-size:22px;margin:4px 0}h2{font-size:17px;margin:22px 0 6px;border-bottom:1px solid #ddd}
.summary{background:#f4f8ff;border:1px solid #cfe0ff;border-radius:6px;padding:8px 12px}
.small,.legend{color:#555;font-size:12px}
table{border-collapse:collapse;font-size:12.5px}th,td{padding:2px 7px;border-bottom:1px solid #eee;text-align:left;vertical-align:top;white-space:nowrap}
td.wrap{white-space:normal;min-width:220px;max-width:420px}
th{background:#f3f3f3;position:sticky;top:0}th.sortable{cursor:pointer}th.sortable:after{content:' \\2195';color:#aaa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.tablewrap{max-height:620px;overflow:auto;border:1px solid #ddd}
tr.pick td{background:#e6f6e6;font-weight:600}tr.tied td{background:#fffbe6}tr.baseline td{color:#777;font-style:italic}
.badge{display:inline-block;border-radius:3px;padding:0 4px;margin-right:3px;font-size:11px;color:#fff}
.b-pick{background:#2a8a2a}.b-tied{background:#b08000}.b-leader{background:#3060c0}.b-base{background:#888}.b-stop{background:#c04040}
.plot{display:inline-block;vertical-align:top;margin:4px 8px 4px 0}.plot svg{display:block}
.plot>.small{width:0;min-width:100%}
.stack{position:relative}.stack svg{position:absolute;left:0;top:0}
.layer{display:none}.pickrun{position:absolute;opacity:0;width:1px;height:1px}
.picks label{opacity:.5;cursor:pointer}
.picks{max-height:150px;overflow:auto;border:1px solid #eee;padding:4px;font-size:12px;margin-bottom:6px}
.picks label{display:inline-block;margin-right:10px;white-space:nowrap}
.sw{display:inline-block;width:12px;height:3px;vertical-align:middle;margin-right:3px}
table.ex td{white-space:pre-wrap}td.good{background:#eaf7ea}td.bad{background:#fbeaea}
pre.file{white-space:pre-wrap;margin:2px 0;font-size:12px;background:#f8f8f8;padding:3px 6px}code{font-size:12px}
";

/// The table sort: a click on a header sorts by its column (numbers by `data-v`), again to reverse.
const SCRIPT: &str = "
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th.sortable').forEach(function(th,i){
    th.addEventListener('click',function(){
      var b=t.tBodies[0],rows=Array.prototype.slice.call(b.rows),c=th.cellIndex;
      var dir=th.getAttribute('data-dir')==='asc'?-1:1;
      t.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-dir')});
      th.setAttribute('data-dir',dir===1?'asc':'desc');
      function key(r){var d=r.cells[c];var v=d.getAttribute('data-v');
        if(v!==null&&v!==''){return [0,parseFloat(v)];}
        if(v===''){return [1,0];}return [0,d.textContent];}
      rows.sort(function(x,y){var a=key(x),k=key(y);if(a[0]!==k[0]){return a[0]-k[0];}
        return (a[1]<k[1]?-1:a[1]>k[1]?1:0)*dir;});
      rows.forEach(function(r){b.appendChild(r)});
    });
  });
});
document.querySelectorAll('button[data-picks]').forEach(function(btn){
  btn.hidden=false;
  btn.addEventListener('click',function(){
    var how=btn.getAttribute('data-picks');
    document.querySelectorAll('input.pickrun').forEach(function(x){
      x.checked=how==='all'?true:how==='none'?false:x.hasAttribute('data-top');});
  });
});
";

/// How many runs' curves show at first (the top of the ranking, and the pick).
pub const CURVES_SHOWN: usize = 8;

/// Renders the page.
pub fn render(page: &Page) -> Result<String, RenderError> {
    let mut body = String::new();
    header(&mut body, page);
    table(&mut body, page);
    curves(&mut body, page)?;
    overview_plots(&mut body, page)?;
    rungs_and_seeds(&mut body, page)?;
    disagreements(&mut body, page);
    provenance(&mut body, page);
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>ftsweep report: {}</title><style>{STYLE}</style></head><body>\n{body}<script>{SCRIPT}</script>\
         </body></html>\n",
        escape(&page.sweep)
    ))
}

fn header(out: &mut String, page: &Page) {
    let runs = page.rows.iter().filter(|r| r.kind == "run").count();
    let done = page.rows.iter().filter(|r| r.kind == "run" && r.score.is_some()).count();
    let _ = write!(
        out,
        "<h1>Sweep <code>{}</code></h1><p class=\"small\">{} runs, {} scored by <b>{}</b>; \
         ftsweep {} · generated {}</p>",
        escape(&page.sweep),
        runs,
        done,
        escape(&page.metric),
        escape(&page.version),
        escape(&page.generated)
    );
    out.push_str("<div class=\"summary\" id=\"pick\">");
    match &page.pick {
        Some(p) => {
            let _ = write!(out, "<b>best picks {}</b>: {}", escape(&label(&page.rows[p.index])), escape(&p.reason));
            if let Some(n) = &p.note {
                let _ = write!(out, "<br><span class=\"small\">note: {}</span>", escape(n));
            }
        }
        None => out.push_str("no run has finished yet: there is no pick"),
    }
    out.push_str("</div>\n");
}

/// A numeric cell: shown text, sort value.
fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) => format!("<td class=\"num\" data-v=\"{x}\">{x:.digits$}</td>"),
        None => "<td class=\"num\" data-v=\"\">-</td>".into(),
    }
}

fn hyper_names(rows: &[LeaderboardRow]) -> Vec<String> {
    crate::run::shown_names(rows.iter().filter_map(|r| r.config.as_ref()))
}

fn table(out: &mut String, page: &Page) {
    let hyper = hyper_names(&page.rows);
    out.push_str("<h2>Ranked runs</h2><div class=\"tablewrap\"><table class=\"sortable\" id=\"ranked\"><thead><tr>");
    let mut head: Vec<String> = vec!["rank".into(), "run".into(), "marks".into(), "n_epochs".into()];
    head.extend(hyper.iter().map(|n| crate::space::short(n).to_string()));
    head.extend(["seed", "status", &page.metric, "95% CI", "vs leader"].map(String::from));
    head.extend(page.others.iter().cloned());
    head.extend(["valid_loss", "gap", "trained_tokens", "cost", "note"].map(String::from));
    for h in &head {
        let _ = write!(out, "<th class=\"sortable\">{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for (i, r) in page.rows.iter().enumerate() {
        row(out, page, i, r, &hyper);
    }
    out.push_str("</tbody></table></div>");
    let _ = write!(
        out,
        "<p class=\"legend\">{} Click a column's header to sort by it. {}</p>",
        escape(&page.legend),
        escape(&page.decoding)
    );
}

fn row(out: &mut String, page: &Page, i: usize, r: &LeaderboardRow, hyper: &[String]) {
    let picked = page.pick.as_ref().is_some_and(|p| p.index == i);
    let class = if picked {
        "pick"
    } else if r.is_baseline {
        "baseline"
    } else if r.tied_with_best && !r.is_leader {
        "tied"
    } else {
        ""
    };
    let mut marks = String::new();
    for (on, class, text) in [
        (picked, "b-pick", "best's pick"),
        (r.is_leader, "b-leader", "leader"),
        (r.tied_with_best && !r.is_leader, "b-tied", "tied"),
        (r.is_baseline, "b-base", "baseline"),
        (r.stopped_early.is_some(), "b-stop", "stopped early"),
    ] {
        if on {
            let _ = write!(marks, "<span class=\"badge {class}\">{text}</span>");
        }
    }
    let _ = write!(
        out,
        "<tr class=\"{class}\">{}<td>{}</td><td>{marks}</td>",
        num(r.rank.map(|x| x as f64), 0),
        escape(&label(r))
    );
    let cfg = r.config.as_ref();
    out.push_str(&num(cfg.and_then(|c| c.n_epochs).map(f64::from), 0));
    for n in hyper {
        let v = cfg.and_then(|c| c.float(n));
        let shown = cfg.map_or_else(|| "-".into(), |c| c.show(n));
        let _ = write!(
            out,
            "<td class=\"num\" data-v=\"{}\">{}</td>",
            v.map_or(String::new(), |x| x.to_string()),
            escape(&shown)
        );
    }
    out.push_str(&num(r.seed.map(|s| s as f64), 0));
    let _ = write!(out, "<td>{}</td>", escape(if r.run_id.is_some() { &r.status } else { "-" }));
    out.push_str(&num(r.score, 3));
    let _ = write!(out, "<td>{}</td><td>{}</td>", escape(&report::ci(r)), escape(&report::vs_leader(r)));
    for n in &page.others {
        out.push_str(&num(r.scores.get(n).copied().flatten(), 3));
    }
    out.push_str(&num(r.valid_loss, 3));
    out.push_str(&num(r.gap, 3));
    out.push_str(&num(r.trained_tokens.map(|t| t as f64), 0));
    out.push_str(&num(r.cost_usd, 2));
    let mut note: Vec<String> = r.note.iter().cloned().collect();
    note.extend(r.error.iter().cloned());
    let _ = writeln!(out, "<td class=\"wrap\">{}</td></tr>", escape(&note.join("; ")));
}

/// The runs with curves, in rank order: (row index, run id, curve).
fn curve_runs(page: &Page) -> Vec<(usize, &str, &Curve)> {
    page.rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == "run")
        .filter_map(|(i, r)| {
            let id = r.run_id.as_deref()?;
            let c = page.curves.get(id)?;
            (!c.train.is_empty() || !c.valid.is_empty()).then_some((i, id, c))
        })
        .collect()
}

fn curves(out: &mut String, page: &Page) -> Result<(), RenderError> {
    let runs = curve_runs(page);
    out.push_str("<h2>Loss curves</h2>");
    if runs.is_empty() {
        out.push_str("<p>no run has recorded losses yet</p>");
        return Ok(());
    }
    let pick = page.pick.as_ref().map(|p| p.index);
    let stopped: Vec<bool> = runs.iter().map(|(i, _, _)| page.rows[*i].stopped_early.is_some()).collect();
    let series: Vec<&Curve> = runs.iter().map(|(_, _, c)| *c).collect();
    let train = plots::loss_layers(&series, &stopped, plots::Loss::Train)?;
    let valid = plots::loss_layers(&series, &stopped, plots::Loss::Valid)?;
    out.push_str(
        "<div class=\"curves\"><p class=\"small\">Each run's training and validation loss by step (its job's steps). \
         ○ a checkpoint (the model at an epoch's end), ✕ the last step of a job that early stopping ended. \
         Click a run's name to show or hide its curves (shown in bold)",
    );
    let _ = write!(out, " (at first the top {CURVES_SHOWN} and the pick)");
    out.push_str(
        ": <button type=\"button\" data-picks=\"all\" hidden>all</button> \
         <button type=\"button\" data-picks=\"none\" hidden>none</button> \
         <button type=\"button\" data-picks=\"top\" hidden>top</button></p>",
    );
    let mut css = String::new();
    for (k, (i, id, _)) in runs.iter().enumerate() {
        let top = k < CURVES_SHOWN || Some(*i) == pick;
        let _ = write!(
            out,
            "<input type=\"checkbox\" class=\"pickrun\" id=\"pick{k}\"{}>",
            if top { " checked data-top" } else { "" }
        );
        let _ = write!(
            css,
            "#pick{k}:checked~.picks label[for=pick{k}]{{font-weight:600;opacity:1}}#pick{k}:checked~div .l{k}{{display:block}}"
        );
        let _ = id;
    }
    out.push_str("<div class=\"picks\">");
    for (k, (i, id, _)) in runs.iter().enumerate() {
        let _ = write!(
            out,
            "<label for=\"pick{k}\"><span class=\"sw\" style=\"background:{}\"></span>{}{}</label>",
            plots::css(plots::run_color(k)),
            escape(id),
            page.rows[*i].rank.map_or(String::new(), |r| format!(" (#{r})"))
        );
    }
    out.push_str("</div>");
    for (name, plot) in [("training loss", &train), ("validation loss", &valid)] {
        let Some(plot) = plot else { continue };
        let _ = write!(
            out,
            "<div class=\"plot stack\" data-plot=\"{name}\" style=\"width:{}px;height:{}px\">{}",
            plot.width, plot.height, plot.base
        );
        for (k, svg) in &plot.layers {
            let _ = write!(out, "<div class=\"layer l{k}\">{svg}</div>");
        }
        out.push_str("</div>");
    }
    let _ = writeln!(out, "<style>{css}</style></div>");
    Ok(())
}

fn plot_div(out: &mut String, name: &str, caption: &str, svg: &str) {
    let _ = write!(
        out,
        "<div class=\"plot\" data-plot=\"{}\">{svg}<div class=\"small\">{}</div></div>",
        escape(name),
        escape(caption)
    );
}

fn overview_plots(out: &mut String, page: &Page) -> Result<(), RenderError> {
    out.push_str("<h2>Hyperparameters and the metric</h2>");
    let pick = page.pick.as_ref().map(|p| p.index);
    if let Some(svg) = plots::parallel(&page.rows, &page.metric)? {
        plot_div(
            out,
            "parallel coordinates",
            &format!(
                "Parallel coordinates: one line per scored run, coloured by {} (yellow best); learning rates on a log axis.",
                page.metric
            ),
            &svg,
        );
    }
    if let Some(svg) = plots::tradeoff(&page.rows, &page.metric, plots::Cost::Tokens, pick)? {
        plot_div(
            out,
            "metric vs tokens",
            &format!(
                "{} against trained tokens, with 95% intervals; the line is the Pareto front (no run both cheaper and better); ★ best's pick.",
                page.metric
            ),
            &svg,
        );
    }
    if let Some(svg) = plots::tradeoff(&page.rows, &page.metric, plots::Cost::Usd, pick)? {
        plot_div(out, "metric vs cost", &format!("{} against cost (USD), with the Pareto front.", page.metric), &svg);
    }
    out.push('\n');
    Ok(())
}

fn rungs_and_seeds(out: &mut String, page: &Page) -> Result<(), RenderError> {
    let rows = &page.rows;
    let runs: Vec<&LeaderboardRow> = rows.iter().filter(|r| r.kind == "run" && r.rung.is_some()).collect();
    if let Some(last) = runs.iter().filter_map(|r| r.rung).max() {
        out.push_str("<h2>Successive halving: rungs</h2>");
        if let Some(svg) = plots::rungs(rows, &page.metric)? {
            plot_div(
                out,
                "rungs",
                &format!("{} by rung; a line joins a run to the run that continued it.", page.metric),
                &svg,
            );
        }
        let _ = write!(
            out,
            "<table><thead><tr><th>rung</th><th>epochs</th><th>runs</th><th>promoted</th><th>stopped early</th>\
             <th>trained tokens (its own jobs)</th><th>best {}</th></tr></thead><tbody>",
            escape(&page.metric)
        );
        for rung in 0..=last {
            let members: Vec<&&LeaderboardRow> = runs.iter().filter(|r| r.rung == Some(rung)).collect();
            let promoted = members
                .iter()
                .filter(|m| runs.iter().any(|n| n.rung == Some(rung + 1) && n.source_run == m.run_id))
                .count();
            let epochs: std::collections::BTreeSet<String> =
                members.iter().map(|m| crate::run::show(m.n_epochs.flatten())).collect();
            let best = members.iter().filter_map(|m| m.score).max_by(f64::total_cmp);
            let _ = write!(
                out,
                "<tr><td class=\"num\">{rung}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&epochs.into_iter().collect::<Vec<_>>().join(", ")),
                members.len(),
                if rung == last { "-".to_string() } else { promoted.to_string() },
                members.iter().filter(|m| m.stopped_early.is_some()).count(),
                members.iter().filter_map(|m| m.job_tokens).sum::<i64>(),
                best.map_or("-".into(), |b| format!("{b:.3}"))
            );
        }
        out.push_str("</tbody></table>\n");
    }
    let groups = plots::seed_groups(rows);
    if !groups.is_empty() {
        out.push_str("<h2>Seed replicates</h2>");
        if let Some(svg) = plots::seeds(rows, &page.metric)? {
            plot_div(
                out,
                "seeds",
                &format!(
                    "{} of each seed (dots), the mean (bar) and the range, per configuration; `best` ranks these by mean.",
                    page.metric
                ),
                &svg,
            );
        }
        let _ = write!(
            out,
            "<table><thead><tr><th>configuration</th><th>seeds</th><th>mean {}</th><th>sd</th><th>min</th><th>max</th></tr></thead><tbody>",
            escape(&page.metric)
        );
        for (name, r) in &groups {
            let Some(g) = &r.seed_group else { continue };
            let seeds: Vec<String> = g.seeds.iter().map(u64::to_string).collect();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{} ({})</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td>\
                 <td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td></tr>",
                escape(name),
                g.seeds.len(),
                seeds.join(", "),
                g.mean,
                g.sd,
                g.min,
                g.max
            );
        }
        out.push_str("</tbody></table>\n");
    }
    Ok(())
}

/// How many disagreeing examples the page shows.
pub const EXAMPLES_SHOWN: usize = 50;

fn disagreements(out: &mut String, page: &Page) {
    let (Some(pick), Some(d)) = (&page.pick, &page.disagreements) else { return };
    let (a, b) = (label(&page.rows[pick.index]), label(&page.rows[d.other]));
    let _ = write!(
        out,
        "<h2>Where the pick and the runner-up disagree</h2><p><b>{}</b> (the pick) and <b>{}</b> (the best-ranked \
         other row) differ on {} of {} examples by {}{}.</p>",
        escape(&a),
        escape(&b),
        d.examples.len(),
        d.n_examples,
        escape(&page.metric),
        if d.examples.len() > EXAMPLES_SHOWN {
            format!("; the first {EXAMPLES_SHOWN} are shown")
        } else {
            String::new()
        }
    );
    let _ = write!(
        out,
        "<table class=\"ex\"><thead><tr><th>line</th><th>prompt</th><th>reference</th><th>the pick, {}</th>\
         <th>the runner-up, {}</th></tr></thead><tbody>",
        escape(&a),
        escape(&b)
    );
    for e in d.examples.iter().take(EXAMPLES_SHOWN) {
        let cell = |text: &str, score: f64| {
            let class = if score >= 1.0 {
                "good"
            } else if score <= 0.0 {
                "bad"
            } else {
                ""
            };
            format!("<td class=\"wrap {class}\">{} <span class=\"small\">({score:.2})</span></td>", escape(text))
        };
        let _ = write!(
            out,
            "<tr><td class=\"num\">{}</td><td class=\"wrap\">{}</td><td class=\"wrap\">{}</td>{}{}</tr>",
            e.line,
            escape(&e.prompt),
            escape(&e.reference),
            cell(&e.reply_pick, e.score_pick),
            cell(&e.reply_other, e.score_other)
        );
    }
    out.push_str("</tbody></table>");
    out.push('\n');
}

fn provenance(out: &mut String, page: &Page) {
    out.push_str("<h2>What this report shows</h2><table><tbody>");
    let _ = write!(out, "<tr><th>sweep file</th><td><code>{}</code></td><td></td></tr>", escape(&page.sweep_path));
    for f in &page.files {
        let _ = write!(
            out,
            "<tr><th>{}</th><td><code>{}</code></td><td>sha256 <code>{}</code></td></tr>",
            escape(&f.role),
            escape(&f.path),
            escape(&f.sha256)
        );
    }
    let _ = write!(
        out,
        "<tr><th>ftsweep</th><td>{}</td><td></td></tr><tr><th>generated</th><td>{}</td><td></td></tr></tbody></table>\
         <p class=\"small\">The sweep file as last run:</p><pre class=\"file\">{}</pre>",
        escape(&page.version),
        escape(&page.generated),
        escape(&page.sweep_file)
    );
}

#[cfg(test)]
mod tests;
