//! `mmapconf explain CASE --html`: a case drawn as swimlanes, the picture
//! the seed draws in words. One lane per process (and one for the harness's
//! own steps), steps top to bottom in the order they run, a fork as an arrow
//! from the parent's lane into the child's, which starts there; the steps of
//! a `together` side by side in one row, since they run at once. Each step
//! box carries what it must observe on its second line.

use super::explain::expectation;
use crate::case::model::{Op, Step};
use crate::case::Case;
use crate::exec::plan;
use crate::report::html::esc;
use std::fmt::Write;

const HARNESS: &str = "harness";
const LEFT: f64 = 64.0;
const TOP: f64 = 76.0;
const ROW: f64 = 58.0;
const BOX_H: f64 = 44.0;
const CHAR_W: f64 = 7.0;
const MAX_CHARS: usize = 46;

/// One row of the drawing: a step, or the steps of a `together`.
struct Row<'a> {
    index: String,
    steps: Vec<(String, &'a Step)>,
    together: bool,
}

/// Where a process's lane begins and ends, and how it came to be.
struct Lane {
    name: String,
    first: usize,
    last: usize,
    origin: String,
    ended: bool,
}

fn rows(case: &Case) -> Vec<Row<'_>> {
    let mut out = Vec::new();
    for (i, s) in case.steps.iter().enumerate() {
        let index = (i + 1).to_string();
        match &s.op {
            Op::Together { steps } => out.push(Row {
                steps: steps
                    .iter()
                    .enumerate()
                    .map(|(j, t)| (format!("{index}.{}", j + 1), t))
                    .collect(),
                index,
                together: true,
            }),
            _ => out.push(Row {
                steps: vec![(index.clone(), s)],
                index,
                together: false,
            }),
        }
    }
    out
}

fn lane_of(s: &Step) -> &str {
    s.process.as_deref().unwrap_or(HARNESS)
}

fn lanes(rows: &[Row]) -> Vec<Lane> {
    let mut lanes: Vec<Lane> = Vec::new();
    let touch = |lanes: &mut Vec<Lane>, name: &str, row: usize, origin: String| match lanes
        .iter_mut()
        .find(|l| l.name == name)
    {
        Some(l) => l.last = row,
        None => lanes.push(Lane {
            name: name.to_string(),
            first: row,
            last: row,
            origin,
            ended: false,
        }),
    };
    for (r, row) in rows.iter().enumerate() {
        for (_, s) in &row.steps {
            let origin = if s.process.is_some() {
                "fresh process".to_string()
            } else {
                "the coordinator".to_string()
            };
            touch(&mut lanes, lane_of(s), r, origin);
            if let (Op::Fork, Some(child)) = (&s.op, &s.name) {
                touch(&mut lanes, child, r, format!("forked from {}", lane_of(s)));
            }
            let gone = match &s.op {
                Op::Exit { .. } => Some(lane_of(s).to_string()),
                Op::Kill { target, signal } if signal == "SIGKILL" => Some(target.clone()),
                _ => None,
            };
            if let Some(g) = gone {
                if let Some(l) = lanes.iter_mut().find(|l| l.name == g) {
                    l.ended = true;
                    l.last = r;
                }
            }
        }
    }
    // The harness lane goes last, out of the processes' way.
    if let Some(i) = lanes.iter().position(|l| l.name == HARNESS) {
        let h = lanes.remove(i);
        lanes.push(h);
    }
    lanes
}

fn clip(text: &str) -> String {
    if text.chars().count() > MAX_CHARS {
        let t: String = text.chars().take(MAX_CHARS - 1).collect();
        format!("{t}…")
    } else {
        text.to_string()
    }
}

/// The step's own text, without the "process: " prefix the lane already says.
fn label(s: &Step) -> String {
    let text = plan::summary(s);
    match &s.process {
        Some(p) => text.trim_start_matches(&format!("{p}: ")).to_string(),
        None => text,
    }
}

/// What the step must observe, as the box's second line.
fn expect_line(s: &Step) -> String {
    let mut e = expectation(s);
    if e.is_empty() && !s.op.is_coordinator_op() {
        e = "succeeds".to_string();
    }
    if !s.variants.is_empty() {
        e.push_str(&format!(" (+{} variant(s))", s.variants.len()));
    }
    if e.is_empty() {
        e
    } else {
        format!("⇒ {e}")
    }
}

/// The whole page.
pub fn page(id: &str, case: &Case) -> String {
    let rows = rows(case);
    let lanes = lanes(&rows);
    let widest = rows
        .iter()
        .flat_map(|r| r.steps.iter())
        .map(|(_, s)| label(s).chars().count().max(expect_line(s).chars().count()))
        .max()
        .unwrap_or(10)
        .min(MAX_CHARS);
    let lane_w = (widest as f64 * CHAR_W + 40.0).max(180.0);
    let x_of = |name: &str| -> f64 {
        let i = lanes.iter().position(|l| l.name == name).unwrap_or(0);
        LEFT + i as f64 * lane_w
    };
    let y_of = |r: usize| TOP + r as f64 * ROW;
    let width = LEFT + lanes.len() as f64 * lane_w + 20.0;
    let height = TOP + rows.len() as f64 * ROW + 30.0;

    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"lanes\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"#444\"/></marker></defs>"
    );
    // Together bands first, beneath everything.
    for (r, row) in rows.iter().enumerate() {
        if row.together {
            let _ = write!(
                svg,
                "<g class=\"together\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"6\"/>\
                 <text x=\"{}\" y=\"{}\" class=\"band\">together: at once, then joined</text></g>",
                LEFT - 4.0,
                y_of(r) - 10.0,
                width - LEFT - 12.0,
                ROW - 2.0,
                width - 20.0,
                y_of(r) - 1.0
            );
        }
    }
    // Lanes: a header, and a line from the first step to the last.
    for l in &lanes {
        let x = x_of(&l.name) + lane_w / 2.0 - 10.0;
        // A forked lane begins where the fork's branch reaches it.
        let y0 = if l.origin.starts_with("forked") {
            y_of(l.first) + BOX_H / 2.0
        } else {
            y_of(l.first)
        };
        let y1 = if l.ended {
            y_of(l.last) + BOX_H
        } else {
            height - 20.0
        };
        let _ = write!(
            svg,
            "<g class=\"lane\" data-process=\"{n}\"><text x=\"{x}\" y=\"30\" class=\"lane-name\">{n}</text>\
             <text x=\"{x}\" y=\"48\" class=\"lane-origin\">{o}</text>\
             <line x1=\"{x}\" y1=\"{y0}\" x2=\"{x}\" y2=\"{y1}\" class=\"life\"/>{end}</g>",
            n = esc(&l.name),
            o = esc(&l.origin),
            end = if l.ended {
                format!(
                    "<line x1=\"{}\" y1=\"{y1}\" x2=\"{}\" y2=\"{y1}\" class=\"end\"/>",
                    x - 12.0,
                    x + 12.0
                )
            } else {
                String::new()
            }
        );
    }
    // Steps, and the arrows of forks, waits and kills.
    for (r, row) in rows.iter().enumerate() {
        let y = y_of(r);
        let _ = write!(
            svg,
            "<text x=\"8\" y=\"{}\" class=\"index\">{}</text>",
            y + 18.0,
            esc(&row.index)
        );
        for (index, s) in &row.steps {
            let lane = lane_of(s);
            let x = x_of(lane);
            let bw = lane_w - 20.0;
            let full = format!(
                "{index} {}{}{}",
                plan::summary(s),
                s.note
                    .as_deref()
                    .map(|n| format!("\nnote: {n}"))
                    .unwrap_or_default(),
                s.variants
                    .iter()
                    .map(|v| format!("\nvariant: {}", v.why))
                    .collect::<String>()
            );
            let class = if s.observe { "step observe" } else { "step" };
            let exp_class = if expectation(s).is_empty() {
                "expect default"
            } else {
                "expect"
            };
            let _ = write!(
                svg,
                "<g class=\"{class}\" data-index=\"{index}\" data-process=\"{}\" data-op=\"{}\"><title>{}</title>\
                 <rect x=\"{x}\" y=\"{y}\" width=\"{bw}\" height=\"{BOX_H}\" rx=\"5\"/>\
                 <text x=\"{}\" y=\"{}\" class=\"what\">{}</text>\
                 <text x=\"{}\" y=\"{}\" class=\"{exp_class}\">{}</text></g>",
                esc(lane),
                esc(s.op.name()),
                esc(&full),
                x + 8.0,
                y + 18.0,
                esc(&clip(&label(s))),
                x + 8.0,
                y + 36.0,
                esc(&clip(&expect_line(s)))
            );
            let arrow = match &s.op {
                Op::Fork => s.name.as_deref().map(|c| ("fork", c)),
                Op::Wait { target } => Some(("wait", target.as_str())),
                Op::Kill { target, .. } => Some(("kill", target.as_str())),
                _ => None,
            };
            if let Some((kind, to)) = arrow {
                let from_x = if x_of(to) > x { x + bw } else { x };
                let to_x = x_of(to) + lane_w / 2.0 - 10.0;
                let mid = y + BOX_H / 2.0;
                // A fork branches: across to the child's lane, then down it
                // to where the child's first own step can be.
                let d = if kind == "fork" {
                    let dir = if to_x > from_x { 1.0 } else { -1.0 };
                    format!(
                        "M{from_x},{mid} H{} Q{to_x},{mid} {to_x},{} V{}",
                        to_x - dir * 10.0,
                        mid + 10.0,
                        y + ROW - 2.0
                    )
                } else {
                    format!("M{from_x},{mid} H{to_x}")
                };
                let _ = write!(
                    svg,
                    "<path class=\"arrow {kind}\" data-from=\"{}\" data-to=\"{}\" d=\"{d}\" marker-end=\"url(#arrow)\"/>",
                    esc(lane),
                    esc(to)
                );
            }
        }
    }
    svg.push_str("</svg>");

    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{id}: swimlanes</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>{id}</h1>\n<p class=\"title\">{title}</p>\n",
        id = esc(id),
        title = esc(&case.title)
    );
    if !case.description.is_empty() {
        let _ = writeln!(out, "<p class=\"desc\">{}</p>", esc(&case.description));
    }
    if !case.files.is_empty() {
        let files: Vec<String> = case.files.keys().map(|f| esc(f)).collect();
        let _ = writeln!(out, "<p>files: {}</p>", files.join(", "));
    }
    out.push_str(&svg);
    if !case.refs.is_empty() {
        out.push_str("\n<ul class=\"refs\">");
        for r in &case.refs {
            let _ = write!(out, "<li>{}</li>", esc(r));
        }
        out.push_str("</ul>");
    }
    out.push_str(
        "\n<p class=\"legend\">Steps run one at a time, top to bottom; ⇒ is what the step must observe. \
         Hover a step for its full text, note and variants.</p>\n</body>\n</html>\n",
    );
    out
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #1d1d1f; }
h1 { font-size: 18px; margin: 0; font-family: ui-monospace, monospace; }
p.title { font-size: 16px; margin: 4px 0 8px; }
p.desc { color: #444; max-width: 70em; }
svg { display: block; margin: 8px 0; }
svg text { font: 12px ui-monospace, monospace; }
.lane-name { font-weight: 700; font-size: 14px; text-anchor: middle; }
.lane-origin { fill: #666; text-anchor: middle; font-size: 11px; }
.life { stroke: #9aa0a6; stroke-width: 2; stroke-dasharray: 4 3; }
.end { stroke: #444; stroke-width: 3; }
.step rect { fill: #eef3fb; stroke: #5b7db1; }
.step.observe rect { fill: #fdf6e3; stroke: #b58900; }
.step .expect { fill: #1f7a3a; }
.step .expect.default { fill: #8a8f98; }
.index { fill: #666; }
.arrow { stroke: #444; stroke-width: 1.6; fill: none; }
.arrow.wait, .arrow.kill { stroke-dasharray: 5 3; }
.together rect { fill: #f3efe0; stroke: #d8cfae; }
.band { fill: #8a7a45; text-anchor: end; font-size: 11px; }
.legend { color: #666; }
"#;
