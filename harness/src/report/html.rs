//! The comparison as one self-contained HTML page: a grid of cases (rows,
//! grouped by topic) by target (columns: kernel, filesystem), one colour per
//! outcome, filters by topic and outcome, and a cell's steps and byte diff
//! shown on click.
//!
//! The grid is rendered here, not by script, so the page reads without
//! JavaScript and a test can check the cells in the DOM. The script only
//! filters and shows details. Its state lives in the URL fragment
//! (`#case=ID&col=N`, `#outcome=fail,error`, `#topic=shared`, `#diff`), so a
//! link can point a colleague at one cell.

use super::compare::{Matrix, Row};
use super::{brief, first_line, step_detail, CaseReport, Status};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The page, complete.
pub fn render(m: &Matrix) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let differing = m.differing().count();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>mmapconf: {} cases on {} targets</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        m.rows.len(),
        m.columns.len()
    );
    let _ = writeln!(
        out,
        "<header><h1>mmapconf comparison</h1><p id=\"counts\">{} cases on {} targets; \
         <strong>{differing}</strong> differ.</p></header>",
        m.rows.len(),
        m.columns.len()
    );
    filters(&mut out, m);
    out.push_str("<main>\n");
    grid(&mut out, m);
    out.push_str(
        "<aside id=\"detail\" hidden><button id=\"close\" title=\"close\">×</button>\
         <h2 id=\"detail-title\"></h2><pre id=\"detail-body\"></pre></aside>\n",
    );
    out.push_str("</main>\n");
    details(&mut out, m);
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    out
}

const OUTCOMES: [&str; 5] = ["pass", "fail", "skip", "error", "absent"];

fn status_class(c: Option<&CaseReport>) -> &'static str {
    match c.map(|c| c.status) {
        Some(Status::Pass) => "pass",
        Some(Status::Fail) => "fail",
        Some(Status::Skip) => "skip",
        Some(Status::Error) => "error",
        None => "absent",
    }
}

fn filters(out: &mut String, m: &Matrix) {
    let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &m.rows {
        *topics.entry(r.topic()).or_default() += 1;
    }
    out.push_str("<nav id=\"filters\">\n<fieldset id=\"topic-filter\"><legend>Topic</legend>");
    for (t, n) in &topics {
        let _ = write!(
            out,
            "<label><input type=\"checkbox\" name=\"topic\" value=\"{0}\" checked> {0} <small>({n})</small></label>",
            esc(t)
        );
    }
    out.push_str("</fieldset>\n<fieldset id=\"outcome-filter\"><legend>Outcome</legend>");
    for o in OUTCOMES {
        let n = m
            .rows
            .iter()
            .filter(|r| r.cells.iter().any(|c| status_class(*c) == o))
            .count();
        let _ = write!(
            out,
            "<label class=\"swatch {o}\"><input type=\"checkbox\" name=\"outcome\" value=\"{o}\" checked> {o} <small>({n})</small></label>"
        );
    }
    out.push_str(
        "</fieldset>\n<label id=\"diff-filter\"><input type=\"checkbox\" id=\"only-diff\"> only cases whose outcome differs</label>\n</nav>\n",
    );
}

fn grid(out: &mut String, m: &Matrix) {
    out.push_str("<table id=\"grid\">\n<thead><tr><th class=\"case\">case</th>");
    for (i, c) in m.columns.iter().enumerate() {
        let _ = write!(
            out,
            "<th class=\"col\" data-col=\"{i}\" title=\"{}\">{}<br><small>{}</small></th>",
            esc(&c.source),
            esc(&c.kernel),
            esc(&c.fs)
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    let mut topic = "";
    for (ri, r) in m.rows.iter().enumerate() {
        if r.topic() != topic {
            topic = r.topic();
            let _ = writeln!(
                out,
                "<tr class=\"topic\" data-topic=\"{0}\"><th colspan=\"{1}\">{0}</th></tr>",
                esc(topic),
                m.columns.len() + 1
            );
        }
        row(out, ri, r);
    }
    out.push_str("</tbody>\n</table>\n");
}

fn row(out: &mut String, ri: usize, r: &Row) {
    let _ = write!(
        out,
        "<tr class=\"case\" data-topic=\"{}\" data-case=\"{}\" data-differs=\"{}\"><th scope=\"row\" title=\"{}\">{}</th>",
        esc(r.topic()),
        esc(&r.id),
        r.differs(),
        esc(&r.title),
        esc(&r.id)
    );
    for (ci, c) in r.cells.iter().enumerate() {
        let class = status_class(*c);
        let step = c
            .and_then(|c| c.failed_step)
            .map(|n| format!("<small>step {n}</small>"))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<td class=\"cell {class}\" data-col=\"{ci}\" data-status=\"{class}\" data-detail=\"d{ri}-{ci}\" tabindex=\"0\">{}{step}</td>",
            if c.is_some() { class } else { "—" }
        );
    }
    out.push_str("</tr>\n");
}

/// Every cell's story, hidden until its cell is clicked.
fn details(out: &mut String, m: &Matrix) {
    out.push_str("<div id=\"details\" hidden>\n");
    for (ri, r) in m.rows.iter().enumerate() {
        for (ci, c) in r.cells.iter().enumerate() {
            let col = &m.columns[ci];
            let title = format!("{} on {}", r.id, col.label);
            let _ = writeln!(
                out,
                "<pre id=\"d{ri}-{ci}\" data-title=\"{}\">{}</pre>",
                esc(&title),
                esc(&cell_story(*c, &r.title))
            );
        }
    }
    out.push_str("</div>\n");
}

/// What a person wants on clicking a cell: the outcome and why, the failing
/// step with its diff, then every step that ran.
fn cell_story(c: Option<&CaseReport>, title: &str) -> String {
    let Some(c) = c else {
        return format!("{title}\n\nnot in this report");
    };
    let mut s = format!("{}\n\n{}", c.title, c.status.as_str().to_uppercase());
    if let Some(reason) = &c.reason {
        let _ = write!(s, ": {}", first_line(reason));
    }
    s.push_str("\n\n");
    if let Some(step) = c.failing_step() {
        s.push_str(&step_detail(step));
        s.push('\n');
    } else if let Some(reason) = &c.reason {
        s.push_str(reason);
        s.push_str("\n\n");
    }
    if !c.steps.is_empty() {
        s.push_str("steps:\n");
        for st in &c.steps {
            let seen = st.observed.as_ref().map(brief).unwrap_or_default();
            let _ = writeln!(
                s,
                "{:>5} {:<8} {}  → {seen}",
                st.index,
                st.status_str(),
                st.summary
            );
        }
    }
    s
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = r#"
:root { --pass: #2e9d4f; --fail: #d7263d; --skip: #9aa0a6; --error: #f08a24; --absent: #ffffff; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fafafa; }
header { padding: 12px 20px 4px; }
h1 { font-size: 20px; margin: 0; }
#filters { display: flex; flex-wrap: wrap; gap: 12px; padding: 8px 20px; align-items: flex-start; }
fieldset { border: 1px solid #ccc; border-radius: 6px; padding: 4px 10px; margin: 0; background: #fff; }
fieldset label { margin-right: 10px; white-space: nowrap; }
.swatch { border-left: 14px solid var(--absent); padding-left: 4px; }
.swatch.pass { border-color: var(--pass); } .swatch.fail { border-color: var(--fail); }
.swatch.skip { border-color: var(--skip); } .swatch.error { border-color: var(--error); }
.swatch.absent { border-left: 14px dashed #999; }
main { display: flex; gap: 16px; padding: 0 20px 20px; align-items: flex-start; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
thead th { position: sticky; top: 0; background: #f0f0f0; }
th.col { text-align: center; min-width: 110px; }
tr.topic th { background: #e8ecf3; font-weight: 600; }
tr.case th { font-weight: normal; font-family: ui-monospace, monospace; font-size: 12px; }
td.cell { text-align: center; color: #fff; cursor: pointer; font-weight: 600; min-width: 110px; }
td.cell small { display: block; font-weight: normal; }
td.pass { background: var(--pass); } td.fail { background: var(--fail); }
td.skip { background: var(--skip); } td.error { background: var(--error); }
td.absent { background: var(--absent); color: #999; }
td.cell.selected { outline: 3px solid #1d1d1f; outline-offset: -3px; }
tr.case[data-differs="true"] th { font-weight: 700; }
#detail { position: sticky; top: 8px; flex: 1; min-width: 360px; max-height: 95vh; overflow: auto;
  background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: 8px 12px; }
#detail h2 { font-size: 15px; margin: 4px 24px 8px 0; }
#detail pre { font: 12px/1.35 ui-monospace, monospace; white-space: pre-wrap; margin: 0; }
#close { float: right; border: none; background: none; font-size: 20px; cursor: pointer; }
.hidden { display: none; }
"#;

const SCRIPT: &str = r#"
(function () {
  var boxes = function (name) { return Array.prototype.slice.call(document.querySelectorAll('input[name="' + name + '"]')); };
  var checked = function (name) { return boxes(name).filter(function (b) { return b.checked; }).map(function (b) { return b.value; }); };
  function apply() {
    var topics = checked('topic'), outcomes = checked('outcome');
    var onlyDiff = document.getElementById('only-diff').checked;
    var shownTopics = {};
    document.querySelectorAll('tr.case').forEach(function (tr) {
      var cells = Array.prototype.slice.call(tr.querySelectorAll('td.cell'));
      var show = topics.indexOf(tr.dataset.topic) >= 0 &&
        cells.some(function (td) { return outcomes.indexOf(td.dataset.status) >= 0; }) &&
        (!onlyDiff || tr.dataset.differs === 'true');
      tr.classList.toggle('hidden', !show);
      if (show) { shownTopics[tr.dataset.topic] = true; }
    });
    document.querySelectorAll('tr.topic').forEach(function (tr) {
      tr.classList.toggle('hidden', !shownTopics[tr.dataset.topic]);
    });
  }
  function show(td) {
    document.querySelectorAll('td.selected').forEach(function (x) { x.classList.remove('selected'); });
    var d = td && document.getElementById(td.dataset.detail);
    var panel = document.getElementById('detail');
    if (!d) { panel.hidden = true; return; }
    td.classList.add('selected');
    document.getElementById('detail-title').textContent = d.dataset.title;
    document.getElementById('detail-body').textContent = d.textContent;
    panel.hidden = false;
  }
  function cellOf(caseId, col) {
    var found = null;
    document.querySelectorAll('tr.case').forEach(function (tr) {
      if (tr.dataset.case === caseId) { found = tr.querySelector('td.cell[data-col="' + col + '"]'); }
    });
    return found;
  }
  // The fragment holds the state: case=ID&col=N, outcome=a,b, topic=a,b, diff.
  function fromHash() {
    var params = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      if (!kv) { return; }
      var i = kv.indexOf('=');
      params[decodeURIComponent(i < 0 ? kv : kv.slice(0, i))] = i < 0 ? '' : decodeURIComponent(kv.slice(i + 1));
    });
    if ('outcome' in params) { var o = params.outcome.split(','); boxes('outcome').forEach(function (b) { b.checked = o.indexOf(b.value) >= 0; }); }
    if ('topic' in params) { var t = params.topic.split(','); boxes('topic').forEach(function (b) { b.checked = t.indexOf(b.value) >= 0; }); }
    if ('diff' in params) { document.getElementById('only-diff').checked = true; }
    apply();
    if ('case' in params) { show(cellOf(params['case'], params.col || '0')); }
  }
  document.getElementById('filters').addEventListener('change', apply);
  document.getElementById('grid').addEventListener('click', function (e) {
    var td = e.target.closest('td.cell');
    if (!td) { return; }
    var tr = td.parentElement;
    history.replaceState(null, '', '#case=' + encodeURIComponent(tr.dataset.case) + '&col=' + td.dataset.col);
    show(td);
  });
  document.getElementById('grid').addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && e.target.matches('td.cell')) { e.target.click(); }
  });
  document.getElementById('close').addEventListener('click', function () { show(null); });
  window.addEventListener('hashchange', fromHash);
  fromHash();
})();
"#;
