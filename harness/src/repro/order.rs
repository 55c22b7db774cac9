//! The coordinator's walk, as the body of the program's `main`: each step
//! sent to its process in the case's order, judged before the next;
//! `fork`, `exit`, `wait`, `kill`, `together` and `check_file` as the
//! harness performs them. Also the process table it needs.

use super::c;
use super::calls::{self, Names};
use super::expect::{initializer, Recorded};
use crate::case::model::{Op, ReadFrom, Step};
use crate::exec::plan;
use crate::names::signal_value;
use crate::target::Environment;
use std::collections::BTreeSet;

/// The case's processes in order of first appearance: a name first seen
/// in `in` is fresh; one made by `fork` has the forking process as parent.
pub struct Processes {
    pub names: Vec<String>,
    pub parent: Vec<Option<usize>>,
}

impl Processes {
    pub fn of(steps: &[Step]) -> Processes {
        let mut p = Processes {
            names: Vec::new(),
            parent: Vec::new(),
        };
        p.walk(steps);
        p
    }

    fn walk(&mut self, steps: &[Step]) {
        for s in steps {
            if let Some(name) = &s.process {
                self.add(name, None);
            }
            if let (Op::Fork, Some(child), Some(parent)) = (&s.op, &s.name, &s.process) {
                let parent = self.index(parent);
                self.add(child, parent);
            }
            if let Op::Together { steps } = &s.op {
                self.walk(steps);
            }
        }
    }

    fn add(&mut self, name: &str, parent: Option<usize>) {
        if self.index(name).is_none() {
            self.names.push(name.to_string());
            self.parent.push(parent);
        }
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// A worker step's C function: its step number ("3", "4.1"), name and text.
pub struct StepFunction {
    pub index: String,
    pub name: String,
    pub text: String,
}

/// Everything the walk produces besides `main`'s body.
#[derive(Default)]
pub struct Walk {
    pub main: Vec<String>,
    /// Worker step functions, in step-id order (id = position + 1).
    pub functions: Vec<StepFunction>,
    pub names: Names,
    pub recorded: Recorded,
    pub errnos: BTreeSet<String>,
    pub proc_ids: Vec<String>,
}

/// The step without its operation name: "writer: at=0 len=18 map=\"m\"".
fn what(step: &Step) -> String {
    let summary = plan::summary(step);
    let who = step
        .process
        .as_deref()
        .map(|p| format!("{p}: "))
        .unwrap_or_default();
    let head = format!("{who}{}", step.op.name());
    match summary.strip_prefix(&head) {
        Some(rest) => format!("{who}{}", rest.trim_start()),
        None => summary,
    }
}

impl Walk {
    pub fn new(procs: &Processes) -> Walk {
        let mut w = Walk::default();
        w.proc_ids = procs
            .names
            .iter()
            .map(|n| w.names.ids.get("P_", n))
            .collect();
        w
    }

    fn proc_id(&self, procs: &Processes, name: &str) -> Result<String, String> {
        procs
            .index(name)
            .map(|i| self.proc_ids[i].clone())
            .ok_or_else(|| format!("no process `{name}`"))
    }

    fn line(&mut self, l: impl Into<String>) {
        self.main.push(l.into());
    }

    /// A worker step's function; returns its id.
    fn function(&mut self, index: &str, step: &Step) -> Result<usize, String> {
        let body = calls::body(&step.op, step.name.as_deref(), &mut self.names)?;
        let id = self.functions.len() + 1;
        let function = format!("step_{}", index.replace('.', "_"));
        let text = format!(
            "/* {index}. {} */\nstatic void {function}(struct obs *o)\n{{\n{body}\n}}\n",
            c::comment(&plan::summary(step))
        );
        self.functions.push(StepFunction {
            index: index.to_string(),
            name: function,
            text,
        });
        Ok(id)
    }

    /// The step's expectation as `var`; returns the variant's `skip_rest`.
    fn expectation(
        &mut self,
        var: &str,
        step: &Step,
        env: &Environment,
    ) -> Result<Option<String>, String> {
        let (init, applied) = initializer(step, env, &mut self.recorded, &mut self.errnos)?;
        if let Some(why) = applied.variant {
            self.line(format!("        /* variant: {} */", c::comment(&why)));
        }
        self.line(format!("        const struct expect {var} = {init};"));
        Ok(applied.skip_rest)
    }

    /// As the harness does after a step that met a variant with
    /// `skip_rest`: the rest of the case is skipped, with the reason.
    fn skip_rest(&mut self, index: &str, step: &Step, why: Option<String>) {
        if let Some(why) = why {
            let line = format!(
                "# the rest is skipped: step {index} ({}): {why}\n",
                plan::summary(step)
            );
            self.line(format!("        printf(\"%s\", {});", c::text(&line)));
            self.line("        goto out;");
        }
    }

    /// One top-level step of the case, as a block of `main`.
    pub fn step(
        &mut self,
        index: &str,
        step: &Step,
        procs: &Processes,
        env: &Environment,
    ) -> Result<(), String> {
        let op = step.op.name();
        self.line(format!(
            "    /* {index}. {} */",
            c::comment(&plan::summary(step))
        ));
        self.line("    {");
        if let Op::Together { steps } = &step.op {
            let mut rows = Vec::new();
            let mut skip = None;
            for (j, inner) in steps.iter().enumerate() {
                let at = format!("{index}.{}", j + 1);
                let id = self
                    .function(&at, inner)
                    .map_err(|e| format!("step {at}: {e}"))?;
                let p = self.proc_id(procs, inner.process.as_deref().unwrap_or_default())?;
                if let Some(why) = self.expectation(&format!("e{}", j + 1), inner, env)? {
                    skip.get_or_insert((at.clone(), inner, why));
                }
                rows.push(format!(
                    "            {{ {p}, {id}, \"{}\", {}, &e{} }},",
                    inner.op.name(),
                    c::text(&what(inner)),
                    j + 1
                ));
            }
            self.line("        const struct concurrent steps[] = {");
            self.main.extend(rows);
            self.line("        };");
            self.line(format!("        if (!together(steps, {}))", steps.len()));
            self.line("            goto out;");
            if let Some((at, inner, why)) = skip {
                self.skip_rest(&at, inner, Some(why));
            }
            self.line("    }");
            return Ok(());
        }
        let skip = self.expectation("e", step, env)?;
        self.line("        struct obs o;");
        let call = match &step.op {
            Op::Fork => {
                let parent = self.proc_id(procs, step.process.as_deref().unwrap_or_default())?;
                let child = self.proc_id(procs, step.name.as_deref().unwrap_or_default())?;
                format!("fork_process(&o, {parent}, {child});")
            }
            Op::Exit { code } => {
                let p = self.proc_id(procs, step.process.as_deref().unwrap_or_default())?;
                format!("exit_process(&o, {p}, {code});")
            }
            Op::Wait { target } => format!("wait_process(&o, {});", self.proc_id(procs, target)?),
            Op::Kill { target, signal } => {
                signal_value(signal).ok_or_else(|| format!("unknown signal `{signal}`"))?;
                format!("kill_process(&o, {}, {signal});", self.proc_id(procs, target)?)
            }
            Op::CheckFile {
                path,
                at,
                len,
                from,
            } => format!(
                "check_file(&o, {}, {}, {}, {});",
                c::text(path),
                c::size(at)?,
                match len {
                    Some(l) => c::size(l)?,
                    None => "-1".to_string(),
                },
                (*from == ReadFrom::Storage) as u8
            ),
            Op::DropCaches => "drop_caches(&o);".to_string(),
            Op::RemoteRead { .. } | Op::RemoteWrite { .. } => {
                return Err(format!(
                    "step {index} ({}): cannot express `{op}` in a C reproducer yet: another process's memory needs its pid and the address of its mapping",
                    plan::summary(step)
                ))
            }
            Op::Crash | Op::Remount { .. } | Op::FillFs { .. } => {
                return Err(format!(
                    "step {index} ({}): `{op}` needs a filesystem the harness made and owns (run --fs); a standalone program cannot do it",
                    plan::summary(step)
                ))
            }
            _ => {
                let p = self.proc_id(procs, step.process.as_deref().unwrap_or_default())?;
                let id = self
                    .function(index, step)
                    .map_err(|e| format!("step {index}: {e}"))?;
                format!("in_process(&o, {p}, {id});")
            }
        };
        self.line(format!("        {call}"));
        self.line(format!(
            "        if (!judge(\"{index}\", \"{op}\", {}, &e, &o))",
            c::text(&what(step))
        ));
        self.line("            goto out;");
        self.skip_rest(index, step, skip);
        self.line("    }");
        Ok(())
    }
}
