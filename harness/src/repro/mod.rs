//! `repro`: a case as a standalone C program, for a bug report.
//!
//! One C file, libc only, that does what the harness does for the case:
//! the same processes (fresh ones forked from a clean parent before
//! anything is mapped, `fork` steps in the process that forks) and
//! threads (pthreads, each with its own pipes), the same order (a command
//! on a pipe to the process or thread that acts next, its observation
//! back; never a sleep), the same raw calls and the same
//! expectations, chosen for one environment when the program is made.
//!
//! `c` spells values in C, `calls` writes each worker step's calls
//! (`system` those on pins, special objects, shared memory, limits and
//! credentials), `expect` each step's expectation, `order` the
//! coordinator's walk; the C runtime (pipes, processes, judging) is
//! `runtime.c`, and the guarded memory accesses are the harness's own
//! `exec/fault.c`.

mod c;
mod calls;
mod expect;
mod order;
mod system;

use crate::case::model::{Case, Op, Zeros};
use crate::case::LoadedCase;
use crate::target::Environment;

/// The harness's fault-guarded loads, stores and increments, used as they are.
const FAULT_C: &str = include_str!("../exec/fault.c");
/// The program's runtime: processes, pipes, observations, judgement.
const RUNTIME_C: &str = include_str!("runtime.c");

/// Errnos and signals the program can name besides those the case names.
const COMMON_ERRNOS: &[&str] = &[
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "EBUSY",
    "EEXIST",
    "ENODEV",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "EROFS",
    "EOVERFLOW",
    "ENOSYS",
    "EOPNOTSUPP",
];
const SIGNALS: &[&str] = &[
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL",
    "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGCHLD", "SIGCONT",
    "SIGSTOP", "SIGTSTP", "SIGXCPU", "SIGXFSZ", "SIGSYS",
];

/// The C program of a case, with the expectations that apply in `env`.
/// Err names the step that cannot be expressed and why.
pub fn c_program(case: &LoadedCase, env: &Environment) -> Result<String, String> {
    let steps = &case.case.steps;
    let procs = order::Processes::of(steps);
    let mut walk = order::Walk::new(&procs);
    for (i, s) in steps.iter().enumerate() {
        let index = (i + 1).to_string();
        walk.step(&index, s, &procs, env).map_err(|e| {
            if e.starts_with("step ") {
                e
            } else {
                format!("step {index} ({}): {e}", crate::exec::plan::summary(s))
            }
        })?;
    }
    let files = make_files(&case.case)?;
    let mut out = String::new();
    out.push_str(&header(case, env));
    out.push_str("#define _GNU_SOURCE\n#include <errno.h>\n#include <signal.h>\n\n");
    out.push_str("/* ---- guarded memory accesses: the harness's own exec/fault.c ---- */\n\n");
    out.push_str(FAULT_C);
    out.push('\n');
    out.push_str(&tables(case, env, &procs, &walk));
    out.push('\n');
    out.push_str(RUNTIME_C);
    out.push_str("\n/* ---- the case ---- */\n\n");
    out.push_str(&walk.names.flags.fallbacks());
    out.push('\n');
    for id in &walk.names.fds {
        out.push_str(&format!("static int {id} = -1;\n"));
    }
    for id in &walk.names.maps {
        out.push_str(&format!("static struct map {id};\n"));
    }
    for id in &walk.names.segs {
        out.push_str(&format!("static int {id} = -1;\n"));
    }
    for id in &walk.names.rings {
        out.push_str(&format!("static struct ring {id};\n"));
    }
    out.push('\n');
    for f in &walk.functions {
        out.push_str(&f.text);
        out.push('\n');
    }
    out.push_str("/* The step functions by id: the number a command names. */\nstatic void (*const STEP_FUNCTIONS[])(struct obs *) = {\n    NULL,\n");
    for f in &walk.functions {
        out.push_str(&format!("    {},\n", f.name));
    }
    // step_begin/step_end: a SIGXFSZ the step raised is what it observed,
    // as in the harness's worker.
    out.push_str(
        "};\n\nstatic void run_step(int id, struct obs *o)\n{\n    step_begin();\n    STEP_FUNCTIONS[id](o);\n    step_end(o);\n}\n\n",
    );
    out.push_str(&files);
    out.push_str("int main(int argc, char **argv)\n{\n    start(argc, argv);\n    make_files();\n");
    // Shared memory outlives the processes: a guardian removes the case's
    // once every process of the case is gone, however the program ends.
    let shm = !walk.names.segs.is_empty() || !walk.names.shm_labels.is_empty();
    if shm {
        out.push_str("    start_guardian();\n");
    }
    out.push_str("    start_processes();\n");
    if shm {
        out.push_str("    guardian_detach();\n");
    }
    out.push('\n');
    out.push_str(&walk.main.join("\n"));
    out.push_str("\nout:\n    return finish();\n}\n");
    Ok(out)
}

/// Wraps prose for a comment block, ` * ` before each line.
fn wrapped(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in c::comment(text).split_whitespace() {
        if !line.is_empty() && line.len() + word.len() > 74 {
            out.push_str(&format!(" * {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!(" * {line}\n"));
    }
    out
}

fn header(case: &LoadedCase, env: &Environment) -> String {
    let c = &case.case;
    let mut h = format!(
        "/*\n * mmapconf case {}, as a standalone C program.\n *\n",
        case.id
    );
    h.push_str(&wrapped(&c.title));
    if !c.description.is_empty() {
        h.push_str(" *\n");
        h.push_str(&wrapped(&c.description));
    }
    h.push_str(" *\n * References:\n");
    for r in &c.refs {
        h.push_str(&wrapped(&format!("- {r}")));
    }
    let requires = serde_json::to_string(&c.requires).unwrap_or_default();
    if requires != "{}" {
        h.push_str(" *\n");
        h.push_str(&wrapped(&format!(
            "The case requires {requires}; this program does not check it."
        )));
    }
    h.push_str(" *\n");
    h.push_str(&wrapped(&format!(
        "Generated by mmapconf {} for Linux {} on {}, filesystem {}{}, page size {}: where the case expects different things in different environments, this program expects what applies there.",
        env.harness_version,
        env.kernel_release,
        env.arch,
        env.fs_type,
        env.target
            .as_ref()
            .map(|t| format!(" (target {t})"))
            .unwrap_or_default(),
        env.page_size
    )));
    h.push_str(" *\n");
    h.push_str(&wrapped(
        "Build and run in an empty directory on the filesystem under test (the current directory if none is given):",
    ));
    h.push_str(" *     cc -O2 -Wall -pthread -o repro repro.c && ./repro [DIR]\n");
    h.push_str(&wrapped(
        "It prints one line per step (ok, or FAIL with what differs) and exits 1 if an expectation fails.",
    ));
    h.push_str(" */\n");
    h
}

/// What the runtime needs to know of the case: its processes, step
/// numbers, recorded names, time limit, and the names it prints.
fn tables(
    case: &LoadedCase,
    env: &Environment,
    procs: &order::Processes,
    walk: &order::Walk,
) -> String {
    let mut t = String::from("/* ---- the case's tables ---- */\n\n");
    t.push_str(&format!(
        "static const char TITLE[] = {};\n",
        c::text(&format!("{}: {}", case.id, case.case.title))
    ));
    t.push_str(&format!("#define GENERATED_PAGE_SIZE {}\n", env.page_size));
    let timeout_ms = (case.case.timeout.unwrap_or(10.0) * 1000.0).ceil() as u64;
    t.push_str(&format!("#define TIMEOUT_MS {timeout_ms}\n"));
    let mut ids = walk.proc_ids.clone();
    ids.push("NPROC".into());
    t.push_str(&format!("enum {{ {} }};\n", ids.join(", ")));
    let quoted = |names: &mut dyn Iterator<Item = &String>| {
        names.map(|n| c::text(n)).collect::<Vec<_>>().join(", ")
    };
    t.push_str(&format!(
        "static const char *const PROC_NAME[] = {{ {} }};\n",
        quoted(&mut procs.names.iter())
    ));
    // Slots by their C ids, -1 for none.
    let slots = |of: &[Option<usize>]| {
        of.iter()
            .map(|p| p.map_or("-1".to_string(), |i| walk.proc_ids[i].clone()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    t.push_str(&format!(
        "/* who forked each process (a thread: its process); -1: a fresh one */\nstatic const int PARENT[] = {{ {} }};\n",
        slots(&procs.parent)
    ));
    t.push_str(&format!(
        "/* the process of each thread; -1: a process */\nstatic const int OWNER[] = {{ {} }};\n",
        slots(&procs.owner)
    ));
    let mut values = vec![String::new(); walk.recorded.values.len() + 1];
    for (name, i) in &walk.recorded.values {
        values[*i] = name.clone();
    }
    t.push_str(&format!(
        "#define NVALUES {}\n#define NSNAPSHOTS {}\nstatic const char *const VALUE_NAME[] = {{ {} }};\n",
        walk.recorded.values.len(),
        walk.recorded.snapshots.len(),
        quoted(&mut values.iter())
    ));
    let mut steps = vec![String::new()];
    steps.extend(walk.functions.iter().map(|f| f.index.clone()));
    t.push_str(&format!(
        "/* the step number of each step function, by its id */\nstatic const char *const STEP_NAMES[] = {{ {} }};\n",
        quoted(&mut steps.iter())
    ));
    let mut errnos: Vec<String> = COMMON_ERRNOS.iter().map(|s| s.to_string()).collect();
    errnos.extend(
        walk.errnos
            .iter()
            .filter(|e| !COMMON_ERRNOS.contains(&e.as_str()))
            .cloned(),
    );
    let mut signals: Vec<String> = SIGNALS.iter().map(|s| s.to_string()).collect();
    signals.extend(
        signals_named(&case.case)
            .into_iter()
            .filter(|s| !SIGNALS.contains(&s.as_str())),
    );
    t.push_str("struct name {\n    int value;\n    const char *name;\n};\n");
    for (table, names) in [("ERRNO_NAMES", errnos), ("SIGNAL_NAMES", signals)] {
        t.push_str(&format!("static const struct name {table}[] = {{\n"));
        for n in names {
            t.push_str(&format!("    {{ {n}, \"{n}\" }},\n"));
        }
        t.push_str("};\n");
    }
    // si_codes: the harness's table, each defined where an older libc lacks it.
    for (name, _, code) in crate::names::si_codes() {
        t.push_str(&format!("#ifndef {name}\n#define {name} {code}\n#endif\n"));
    }
    t.push_str("static const struct {\n    int signo, code;\n    const char *name;\n} SI_CODE_NAMES[] = {\n");
    for (name, signo, _) in crate::names::si_codes() {
        let sig = crate::names::signal_name(*signo);
        t.push_str(&format!("    {{ {sig}, {name}, \"{name}\" }},\n"));
    }
    t.push_str("};\n");
    t.push_str(&format!(
        "/* the case's shm_open names, which the guardian removes at the end */\nstatic const char *const SHM_LABELS[] = {{ {}NULL }};\n",
        walk.names
            .shm_labels
            .iter()
            .map(|l| format!("{}, ", c::text(l)))
            .collect::<String>()
    ));
    t
}

/// Signals the case sends or expects, so the program can name them.
fn signals_named(case: &Case) -> Vec<String> {
    let mut out = Vec::new();
    let mut each = |s: &crate::case::model::Step| {
        if let Op::Kill { signal, .. } = &s.op {
            out.push(signal.clone());
        }
        let expects = s
            .expect
            .iter()
            .chain(s.variants.iter().filter_map(|v| v.expect.as_ref()));
        for e in expects {
            out.extend(e.signal.clone());
            out.extend(e.killed_by.clone());
        }
    };
    for s in &case.steps {
        each(s);
        if let Op::Together { steps } = &s.op {
            steps.iter().for_each(&mut each);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The case's starting files, made in name order as the harness does.
fn make_files(case: &Case) -> Result<String, String> {
    let mut f = String::from("static void make_files(void)\n{\n");
    for (name, init) in &case.files {
        let fail = |e: String| format!("files.{name}: {e}");
        let content = if init.data.is_empty() {
            "NULL".to_string()
        } else {
            let d = calls::data(&init.data, init.size.as_ref()).map_err(fail)?;
            f.push_str(&format!("    {{\n        const struct data d = {d};\n"));
            "&d".to_string()
        };
        let size = match &init.size {
            Some(s) => c::size(s).map_err(fail)?,
            None => "-1".to_string(),
        };
        let call = format!(
            "make_file({}, {content}, {size}, {}, 0{:o});\n",
            c::text(name),
            (init.zeros == Some(Zeros::Allocated)) as u8,
            init.mode.unwrap_or(0o644)
        );
        if content == "NULL" {
            f.push_str(&format!("    {call}"));
        } else {
            f.push_str(&format!("        {call}    }}\n"));
        }
    }
    f.push_str("}\n\n");
    Ok(f)
}
