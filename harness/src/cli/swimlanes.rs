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
use crate::report::pages;
use serde::Serialize;

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

/// The step's own text, without the "process: " prefix the lane already
/// says; a thread's step keeps the thread ("t1: load ...").
fn label(s: &Step) -> String {
    let text = plan::summary(s);
    match &s.process {
        Some(p) => text
            .trim_start_matches(&format!("{p}: "))
            .trim_start_matches(&format!("{p}/"))
            .to_string(),
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

/// A `together` row's band, beneath its steps.
#[derive(Serialize)]
struct Band {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    text_x: f64,
    text_y: f64,
}

/// A lane's header and life line; `ended` draws a bar where it stops.
#[derive(Serialize)]
struct LaneView<'a> {
    name: &'a str,
    origin: &'a str,
    x: f64,
    y0: f64,
    y1: f64,
    ended: bool,
}

#[derive(Serialize)]
struct RowView {
    index: String,
    y: f64,
    steps: Vec<StepView>,
}

#[derive(Serialize)]
struct StepView {
    class: &'static str,
    index: String,
    process: String,
    op: &'static str,
    /// The whole text, note and variants (the box's tooltip).
    full: String,
    x: f64,
    w: f64,
    what: String,
    expect_class: &'static str,
    expect: String,
    arrow: Option<Arrow>,
}

/// A fork, wait or kill: an arrow to the other process's lane.
#[derive(Serialize)]
struct Arrow {
    kind: &'static str,
    to: String,
    d: String,
}

#[derive(Serialize)]
struct Page<'a> {
    id: &'a str,
    title: &'a str,
    description: &'a str,
    files: Vec<&'a str>,
    refs: &'a [String],
    width: f64,
    height: f64,
    box_h: f64,
    bands: Vec<Band>,
    lanes: Vec<LaneView<'a>>,
    rows: Vec<RowView>,
}

/// The whole page (templates/swimlanes.html).
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

    // Together bands first, beneath everything.
    let bands = rows
        .iter()
        .enumerate()
        .filter(|(_, row)| row.together)
        .map(|(r, _)| Band {
            x: LEFT - 4.0,
            y: y_of(r) - 10.0,
            w: width - LEFT - 12.0,
            h: ROW - 2.0,
            text_x: width - 20.0,
            text_y: y_of(r) - 1.0,
        })
        .collect();
    // Lanes: a header, and a line from the first step to the last.
    let lane_views = lanes
        .iter()
        .map(|l| LaneView {
            name: &l.name,
            origin: &l.origin,
            x: x_of(&l.name) + lane_w / 2.0 - 10.0,
            // A forked lane begins where the fork's branch reaches it.
            y0: if l.origin.starts_with("forked") {
                y_of(l.first) + BOX_H / 2.0
            } else {
                y_of(l.first)
            },
            y1: if l.ended {
                y_of(l.last) + BOX_H
            } else {
                height - 20.0
            },
            ended: l.ended,
        })
        .collect();
    // Steps, and the arrows of forks, waits and kills.
    let row_views = rows
        .iter()
        .enumerate()
        .map(|(r, row)| {
            let y = y_of(r);
            let steps = row
                .steps
                .iter()
                .map(|(index, s)| {
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
                    let arrow = match &s.op {
                        Op::Fork => s.name.as_deref().map(|c| ("fork", c)),
                        Op::Wait { target } => Some(("wait", target.as_str())),
                        Op::Kill { target, .. } => Some(("kill", target.as_str())),
                        _ => None,
                    }
                    .map(|(kind, to)| {
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
                        Arrow {
                            kind,
                            to: to.to_string(),
                            d,
                        }
                    });
                    StepView {
                        class: if s.observe { "step observe" } else { "step" },
                        index: index.clone(),
                        process: lane.to_string(),
                        op: s.op.name(),
                        full,
                        x,
                        w: bw,
                        what: clip(&label(s)),
                        expect_class: if expectation(s).is_empty() {
                            "expect default"
                        } else {
                            "expect"
                        },
                        expect: clip(&expect_line(s)),
                        arrow,
                    }
                })
                .collect();
            RowView {
                index: row.index.clone(),
                y,
                steps,
            }
        })
        .collect();
    pages::render(
        "swimlanes.html",
        Page {
            id,
            title: &case.title,
            description: &case.description,
            files: case.files.keys().map(String::as_str).collect(),
            refs: &case.refs,
            width,
            height,
            box_h: BOX_H,
            bands,
            lanes: lane_views,
            rows: row_views,
        },
    )
}
