//! The coordinator's walk, as the body of the program's `main`: each step
//! sent to its process (or thread) in the case's order, judged before the
//! next; `fork`, `exit`, `wait`, `kill`, `together`, `spawn_thread`,
//! `remote_read`/`remote_write` and `check_file` as the harness performs
//! them. Also the table of processes and threads it needs.

use super::c;
use super::calls::{self, Names};
use super::expect::{initializer, Recorded};
use crate::case::model::{Op, ReadFrom, Step};
use crate::case::validate::MAIN_THREAD;
use crate::exec::plan;
use crate::names::signal_value;
use crate::target::Environment;
use std::collections::BTreeSet;

/// The case's processes and threads in order of first appearance, each a
/// slot with its own pipes: a process name first seen in `in` is fresh;
/// one made by `fork` has the forking process as parent; a thread made by
/// `spawn_thread` has its process as owner (and, for the program's pipe
/// bookkeeping, as parent: the process keeps its threads' pipe ends).
pub struct Processes {
    pub names: Vec<String>,
    pub parent: Vec<Option<usize>>,
    /// For a thread's slot, its process's slot; None for a process.
    pub owner: Vec<Option<usize>>,
}

impl Processes {
    pub fn of(steps: &[Step]) -> Processes {
        let mut p = Processes {
            names: Vec::new(),
            parent: Vec::new(),
            owner: Vec::new(),
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
            if let (Op::SpawnThread, Some(thread), Some(process)) = (&s.op, &s.name, &s.process) {
                let owner = self.index(process);
                if self.thread(process, thread).is_none() {
                    self.names.push(thread.clone());
                    self.parent.push(owner);
                    self.owner.push(owner);
                }
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
            self.owner.push(None);
        }
    }

    /// The slot of process `name` (never a thread's).
    pub fn index(&self, name: &str) -> Option<usize> {
        (0..self.names.len()).find(|&i| self.owner[i].is_none() && self.names[i] == name)
    }

    /// The slot of thread `thread` of process `process`.
    fn thread(&self, process: &str, thread: &str) -> Option<usize> {
        let p = self.index(process)?;
        (0..self.names.len()).find(|&i| self.owner[i] == Some(p) && self.names[i] == thread)
    }

    /// The slot that performs `step`: its process, or the thread it names.
    fn performer(&self, step: &Step) -> Result<usize, String> {
        let process = step.process.as_deref().unwrap_or_default();
        match step.thread.as_deref() {
            Some(t) if t != MAIN_THREAD => self
                .thread(process, t)
                .ok_or_else(|| format!("no thread `{t}` of process `{process}`")),
            _ => self
                .index(process)
                .ok_or_else(|| format!("no process `{process}`")),
        }
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
    let who = match (&step.process, &step.thread) {
        (Some(p), Some(t)) => format!("{p}/{t}: "),
        (Some(p), None) => format!("{p}: "),
        _ => String::new(),
    };
    let head = format!("{who}{}", step.op.name());
    match summary.strip_prefix(&head) {
        Some(rest) => format!("{who}{}", rest.trim_start()),
        None => summary,
    }
}

impl Walk {
    pub fn new(procs: &Processes) -> Walk {
        let mut w = Walk::default();
        w.proc_ids = (0..procs.names.len())
            .map(|i| match procs.owner[i] {
                None => w.names.ids.get("P_", &procs.names[i]),
                Some(p) => {
                    let key = format!("{}_{}", procs.names[p], procs.names[i]);
                    w.names.ids.get("T_", &key)
                }
            })
            .collect();
        w
    }

    fn proc_id(&self, procs: &Processes, name: &str) -> Result<String, String> {
        procs
            .index(name)
            .map(|i| self.proc_ids[i].clone())
            .ok_or_else(|| format!("no process `{name}`"))
    }

    /// The id of the process or thread that performs `step`.
    fn performer(&self, procs: &Processes, step: &Step) -> Result<String, String> {
        procs.performer(step).map(|i| self.proc_ids[i].clone())
    }

    fn line(&mut self, l: impl Into<String>) {
        self.main.push(l.into());
    }

    /// A worker step's function; returns its id.
    fn function(&mut self, index: &str, step: &Step) -> Result<usize, String> {
        let body = calls::body(&step.op, step.name.as_deref(), &mut self.names)?;
        Ok(self.add_function(index, "", &plan::summary(step), body))
    }

    /// A step function named `step_<index><suffix>` with `body`; its id.
    fn add_function(&mut self, index: &str, suffix: &str, what: &str, body: String) -> usize {
        let id = self.functions.len() + 1;
        let function = format!("step_{}{suffix}", index.replace('.', "_"));
        let text = format!(
            "/* {index}. {} */\nstatic void {function}(struct obs *o)\n{{\n{body}\n}}\n",
            c::comment(what)
        );
        self.functions.push(StepFunction {
            index: index.to_string(),
            name: function,
            text,
        });
        id
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
                let p = self.performer(procs, inner)?;
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
                // The forking thread's slot: it becomes the child's one thread.
                let parent = self.performer(procs, step)?;
                let child = self.proc_id(procs, step.name.as_deref().unwrap_or_default())?;
                format!("fork_process(&o, {parent}, {child});")
            }
            Op::Exit { code } => {
                let p = self.performer(procs, step)?;
                format!("exit_process(&o, {p}, {code});")
            }
            Op::SpawnThread => {
                let by = self.performer(procs, step)?;
                let thread = Step {
                    thread: step.name.clone(),
                    ..step.clone()
                };
                format!(
                    "spawn_thread(&o, {by}, {});",
                    self.performer(procs, &thread)?
                )
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
            Op::RemoteRead {
                target, map, at, ..
            }
            | Op::RemoteWrite {
                target, map, at, ..
            } => {
                // As the harness's coordinator/remote.rs: the target says
                // where its mapping is now, then the actor reaches it.
                let by = self.performer(procs, step)?;
                let target = self.proc_id(procs, target)?;
                let body = calls::address(map, at, &mut self.names)?;
                let place = format!("where `{map}` is, for {}", plan::summary(step));
                let address = self.add_function(index, "_address", &place, body);
                let id = self
                    .function(index, step)
                    .map_err(|e| format!("step {index}: {e}"))?;
                format!("remote_step(&o, {by}, {target}, {address}, {id});")
            }
            Op::Crash | Op::Remount { .. } | Op::FillFs { .. } => {
                return Err(format!(
                    "step {index} ({}): `{op}` needs a filesystem the harness made and owns (run --fs); a standalone program cannot do it",
                    plan::summary(step)
                ))
            }
            _ => {
                let p = self.performer(procs, step)?;
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
