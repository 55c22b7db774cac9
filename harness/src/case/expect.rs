//! Expectations: which one applies in an environment, and whether an
//! observation meets it.

use super::model::{Expect, Since, Step, When};
use crate::exec::protocol::{ExitStatus, Observation, Outcome, StatInfo};
use crate::names::KernelRange;
use crate::target::Environment;
use std::collections::HashMap;

/// What a step is held to in one environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// None when the step only observes.
    pub expect: Option<Expect>,
    /// The `why` of the variant that applied, if one did.
    pub variant: Option<String>,
    /// The `skip_rest` reason of the variant that applied, if it has one.
    pub skip_rest: Option<String>,
}

/// Whether `when` describes `env`.
pub fn matches(when: &When, env: &Environment) -> bool {
    (when.fs.is_empty() || when.fs.iter().any(|f| env.is_fs(f)))
        && (when.target.is_empty() || env.is_target(&when.target))
        && env.has_mount_options(&when.mount_options)
        && when
            .kernel
            .as_ref()
            .is_none_or(|k| KernelRange::parse(k).is_ok_and(|r| r.contains(env.kernel())))
        && when.page_size.is_none_or(|p| p == env.page_size)
        && (when.arch.is_empty() || when.arch.contains(&env.arch))
}

/// The expectation of a step in `env`: the first matching variant, else the default.
pub fn applied(step: &Step, env: &Environment) -> Applied {
    if let Some(v) = step.variants.iter().find(|v| matches(&v.when, env)) {
        return Applied {
            expect: (!v.observe).then(|| v.expect.clone().unwrap_or_default()),
            variant: Some(v.why.clone()),
            skip_rest: v.skip_rest.clone(),
        };
    }
    Applied {
        expect: (!step.observe).then(|| step.expect.clone().unwrap_or_default()),
        variant: None,
        skip_rest: None,
    }
}

/// What a judgement needs besides the observation.
pub struct Context<'a> {
    pub page_size: u64,
    /// fstat snapshots taken by earlier steps, by name.
    pub snapshots: &'a HashMap<String, StatInfo>,
    /// Numbers recorded by earlier steps, by name.
    pub values: &'a HashMap<String, i64>,
}

/// Compares an observation with an expectation; Err says how they differ.
pub fn judge(expect: &Expect, obs: &Observation, ctx: &Context<'_>) -> Result<(), String> {
    judge_outcome(expect, &obs.outcome)?;
    let mut problems = Vec::new();
    let want = expect.bytes();
    if !want.is_empty() {
        match &obs.bytes {
            None => problems.push("expected bytes, but the step returned none".to_string()),
            Some(got) => {
                let len = Some(got.len() as u64);
                match expect.want_bytes(ctx.page_size, len) {
                    Err(e) => problems.push(format!("expected bytes: {e}")),
                    Ok(w) if &w != got => problems.push(byte_diff(&w, got)),
                    Ok(_) => {}
                }
            }
        }
    }
    let number = |s: &super::model::Size| s.resolve_number(ctx.page_size);
    if let Some(v) = &expect.value {
        let v = number(v)?;
        match obs.value {
            Some(got) if got == v => {}
            Some(got) => problems.push(format!("expected value {v}, observed {got}")),
            None => problems.push(format!(
                "expected value {v}, but the step observed no number"
            )),
        }
    }
    if let Some([lo, hi]) = &expect.range {
        let (lo, hi) = (number(lo)?, number(hi)?);
        match obs.value {
            Some(got) if (lo..=hi).contains(&got) => {}
            Some(got) => problems.push(format!("expected a value in [{lo}, {hi}], observed {got}")),
            None => problems.push(format!(
                "expected a value in [{lo}, {hi}], but the step observed no number"
            )),
        }
    }
    for (name, same) in [(&expect.same_as, true), (&expect.differs_from, false)] {
        let Some(name) = name else { continue };
        match (ctx.values.get(name), obs.value) {
            (Some(then), Some(now)) if (*then == now) == same => {}
            (Some(then), Some(now)) => problems.push(format!(
                "expected {now} to {} `{name}` ({then})",
                if same { "equal" } else { "differ from" }
            )),
            (None, _) => problems.push(format!("no value was recorded as `{name}`")),
            (_, None) => problems.push("the step observed no number".to_string()),
        }
    }
    if expect.exit.is_some() || expect.killed_by.is_some() {
        let want = match (&expect.exit, &expect.killed_by) {
            (Some(code), _) => ExitStatus::Exited(*code),
            (None, Some(sig)) => ExitStatus::Killed(sig.clone()),
            _ => unreachable!(),
        };
        match &obs.exit {
            Some(got) if *got == want => {}
            Some(got) => problems.push(format!(
                "expected the process to end {}, it ended {}",
                describe_exit(&want),
                describe_exit(got)
            )),
            None => problems.push("expected an exit status, observed none".to_string()),
        }
    }
    super::expect_fault::judge_fault(expect, &obs.outcome, ctx.page_size, &mut problems);
    if let Some(st) = &expect.stat {
        match &obs.stat {
            None => problems.push("expected stat fields, observed none".to_string()),
            Some(got) => judge_stat(st, got, ctx, &mut problems),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn judge_outcome(expect: &Expect, got: &Outcome) -> Result<(), String> {
    let shown = describe_outcome(got);
    if let Outcome::Error { message } = got {
        return Err(format!("the harness could not perform the step: {message}"));
    }
    if let Some(errno) = &expect.errno {
        return match got {
            Outcome::Errno { errno: e } if e == errno => Ok(()),
            _ => Err(format!(
                "expected the call to fail with {errno}, observed {shown}"
            )),
        };
    }
    if let Some(sig) = &expect.signal {
        return match got {
            Outcome::Signal {
                signal, si_code, ..
            } if signal == sig => match &expect.si_code {
                Some(code) if code != si_code => Err(format!(
                    "expected {sig} with si_code {code}, observed {shown}"
                )),
                _ => Ok(()),
            },
            _ => Err(format!(
                "expected the access to raise {sig}, observed {shown}"
            )),
        };
    }
    match got {
        Outcome::Ok => Ok(()),
        _ => Err(format!("expected success, observed {shown}")),
    }
}

fn judge_stat(
    want: &super::model::StatExpect,
    got: &StatInfo,
    ctx: &Context<'_>,
    problems: &mut Vec<String>,
) {
    if let Some(size) = &want.size {
        match size.resolve(ctx.page_size) {
            Ok(s) if s == got.size as i128 => {}
            Ok(s) => problems.push(format!("expected st_size {s}, observed {}", got.size)),
            Err(e) => problems.push(e),
        }
    }
    if let Some([lo, hi]) = want.blocks {
        if !(lo..=hi).contains(&got.blocks) {
            problems.push(format!(
                "expected st_blocks in [{lo}, {hi}], observed {}",
                got.blocks
            ));
        }
    }
    fn mtime(s: &StatInfo) -> (i64, i64) {
        (s.mtime_sec, s.mtime_nsec)
    }
    fn ctime(s: &StatInfo) -> (i64, i64) {
        (s.ctime_sec, s.ctime_nsec)
    }
    type Pick = fn(&StatInfo) -> (i64, i64);
    let stamps: [(&str, &Option<Since>, Pick); 2] = [
        ("st_mtime", &want.mtime, mtime),
        ("st_ctime", &want.ctime, ctime),
    ];
    for (field, since, pick) in stamps {
        let now = pick(got);
        let Some(since) = since else { continue };
        let (changed_wanted, snap) = match since {
            Since::ChangedSince(s) => (true, s),
            Since::UnchangedSince(s) => (false, s),
        };
        let Some(before) = ctx.snapshots.get(snap) else {
            problems.push(format!(
                "no snapshot `{snap}` was taken (did that fstat fail?)"
            ));
            continue;
        };
        let then = pick(before);
        let changed = then != now;
        if changed != changed_wanted {
            problems.push(format!(
                "expected {field} {} since `{snap}`: was {}.{:09}, now {}.{:09}",
                if changed_wanted {
                    "to change"
                } else {
                    "to stay unchanged"
                },
                then.0,
                then.1,
                now.0,
                now.1
            ));
        }
    }
}

/// A short description of an outcome ("success", "EINVAL", "SIGBUS (BUS_ADRERR) at +4096").
pub fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "success".to_string(),
        Outcome::Errno { errno } => format!("failure with {errno}"),
        Outcome::Signal {
            signal,
            si_code,
            offset,
            ..
        } => format!("{signal} ({si_code}) at offset {offset}"),
        Outcome::Error { message } => format!("harness error: {message}"),
    }
}

fn describe_exit(e: &ExitStatus) -> String {
    match e {
        ExitStatus::Exited(c) => format!("with exit status {c}"),
        ExitStatus::Killed(s) => format!("killed by {s}"),
    }
}

/// A readable difference of two byte strings: the first differing offset,
/// then expected and observed hex dumps of the 16-byte rows that differ.
pub fn byte_diff(want: &[u8], got: &[u8]) -> String {
    let first = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let mut out = String::new();
    if want.len() != got.len() {
        out.push_str(&format!(
            "expected {} bytes, observed {}; ",
            want.len(),
            got.len()
        ));
    }
    let show = |b: Option<&u8>| match b {
        Some(b) => format!("0x{b:02x} {}", printable(*b)),
        None => "nothing".to_string(),
    };
    out.push_str(&format!(
        "bytes differ at offset {first}: expected {}, observed {}",
        show(want.get(first)),
        show(got.get(first))
    ));
    let rows = want.len().max(got.len()).div_ceil(16);
    let mut shown = 0;
    for row in 0..rows {
        let r = row * 16..(row + 1) * 16;
        let w = &want[r.start.min(want.len())..r.end.min(want.len())];
        let g = &got[r.start.min(got.len())..r.end.min(got.len())];
        if w == g {
            continue;
        }
        if shown == 8 {
            out.push_str("\n  ... (more rows differ)");
            break;
        }
        shown += 1;
        out.push_str(&format!("\n  {:08x}  expected {}", r.start, dump_row(w)));
        out.push_str(&format!("\n  {:08x}  observed {}", r.start, dump_row(g)));
        let marks: String = (0..16)
            .map(|i| if w.get(i) != g.get(i) { "^^ " } else { "   " })
            .collect();
        out.push_str(&format!("\n            marks    {}", marks.trim_end()));
    }
    out
}

fn dump_row(b: &[u8]) -> String {
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    let text: String = b.iter().map(|x| printable(*x)).collect();
    format!("{:<47}  |{}|", hex.join(" "), text)
}

fn printable(b: u8) -> char {
    if b.is_ascii_graphic() || b == b' ' {
        b as char
    } else {
        '.'
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::model::Variant;
    use rstest::rstest;

    fn env(fs: &str, release: &str) -> Environment {
        let mut e = Environment::probe(std::path::Path::new("/"));
        e.fs_type = fs.to_string();
        e.kernel_release = release.to_string();
        e
    }

    fn step(json: &str) -> Step {
        serde_json::from_str(json).unwrap()
    }

    #[rstest]
    #[case("tmpfs", "6.1.0", Some("EPERM"), Some("tmpfs differs"))]
    #[case("ext4", "6.1.0", Some("EINVAL"), None)]
    #[case("ext4", "4.9.0", Some("ENOSYS"), Some("old kernel"))]
    fn variants_pick_the_first_match(
        #[case] fs: &str,
        #[case] release: &str,
        #[case] errno: Option<&str>,
        #[case] why: Option<&str>,
    ) {
        let mut s = step(r#"{"in":"p","do":"fork","expect":{"errno":"EINVAL"}}"#);
        s.variants = vec![
            Variant {
                when: When {
                    fs: vec!["tmpfs".into()],
                    ..When::default()
                },
                expect: Some(Expect {
                    errno: Some("EPERM".into()),
                    ..Expect::default()
                }),
                observe: false,
                why: "tmpfs differs".into(),
                skip_rest: None,
            },
            Variant {
                when: When {
                    kernel: Some("<4.14".into()),
                    ..When::default()
                },
                expect: Some(Expect {
                    errno: Some("ENOSYS".into()),
                    ..Expect::default()
                }),
                observe: false,
                why: "old kernel".into(),
                skip_rest: None,
            },
        ];
        let a = applied(&s, &env(fs, release));
        assert_eq!(a.expect.unwrap().errno.as_deref(), errno);
        assert_eq!(a.variant.as_deref(), why);
    }

    #[test]
    fn observe_applies_no_expectation() {
        let s = step(r#"{"in":"p","do":"fork","observe":true}"#);
        assert_eq!(applied(&s, &env("ext4", "6.1")).expect, None);
    }

    fn ctx() -> Context<'static> {
        static EMPTY: std::sync::OnceLock<HashMap<String, StatInfo>> = std::sync::OnceLock::new();
        static VALUES: std::sync::OnceLock<HashMap<String, i64>> = std::sync::OnceLock::new();
        Context {
            page_size: 4096,
            snapshots: EMPTY.get_or_init(HashMap::new),
            values: VALUES.get_or_init(|| HashMap::from([("pfn".to_string(), 42)])),
        }
    }

    #[test]
    fn success_and_errno_and_signal() {
        let ok = Observation::ok();
        let einval = Observation::errno(libc::EINVAL);
        let bus = Observation::of(Outcome::Signal {
            signal: "SIGBUS".into(),
            si_code: "BUS_ADRERR".into(),
            offset: 0,
            done: 0,
            map_offset: 0,
        });
        let want_ok = Expect::default();
        let want_einval = Expect {
            errno: Some("EINVAL".into()),
            ..Expect::default()
        };
        let want_bus = Expect {
            signal: Some("SIGBUS".into()),
            si_code: Some("BUS_ADRERR".into()),
            ..Expect::default()
        };
        let want_bus_obj = Expect {
            signal: Some("SIGBUS".into()),
            si_code: Some("BUS_OBJERR".into()),
            ..Expect::default()
        };
        assert!(judge(&want_ok, &ok, &ctx()).is_ok());
        assert!(judge(&want_ok, &einval, &ctx())
            .unwrap_err()
            .contains("EINVAL"));
        assert!(judge(&want_einval, &einval, &ctx()).is_ok());
        assert!(judge(&want_einval, &ok, &ctx()).is_err());
        assert!(judge(&want_bus, &bus, &ctx()).is_ok());
        assert!(judge(&want_bus_obj, &bus, &ctx())
            .unwrap_err()
            .contains("BUS_OBJERR"));
        assert!(judge(&want_ok, &bus, &ctx())
            .unwrap_err()
            .contains("SIGBUS"));
        assert!(judge(&want_bus, &ok, &ctx()).is_err());
    }

    #[test]
    fn bytes_values_and_ranges() {
        let obs = crate::exec::ops::with_bytes(2000u32.to_ne_bytes().to_vec());
        use crate::case::model::Size;
        let val = |v| Expect {
            value: Some(Size::Bytes(v)),
            ..Expect::default()
        };
        let range = |lo, hi| Expect {
            range: Some([Size::Bytes(lo), Size::Bytes(hi)]),
            ..Expect::default()
        };
        assert!(judge(&val(2000), &obs, &ctx()).is_ok());
        assert!(judge(&val(1999), &obs, &ctx()).is_err());
        assert!(judge(&range(1000, 2000), &obs, &ctx()).is_ok());
        assert!(judge(&range(0, 1999), &obs, &ctx()).is_err());
        // Numbers are sizes too: hex, and pages of the context's page size.
        let expr = |e: &str| Expect {
            value: Some(Size::Expr(e.into())),
            ..Expect::default()
        };
        assert!(judge(&expr("0x7d0"), &obs, &ctx()).is_ok());
        assert!(judge(&expr("0x7d1"), &obs, &ctx()).is_err());
        let page = crate::exec::ops::with_bytes(4096u32.to_ne_bytes().to_vec());
        assert!(judge(&expr("1p"), &page, &ctx()).is_ok());
        assert!(judge(&expr("1p+1"), &page, &ctx()).is_err());
        // Eight bytes ff read as -1; the same number written in hex.
        let ones = crate::exec::ops::with_bytes(vec![0xff; 8]);
        assert!(judge(&expr("0xffffffffffffffff"), &ones, &ctx()).is_ok());
        let text = crate::exec::ops::with_bytes(b"Hello".to_vec());
        let want = |t: &str| Expect {
            text: Some(t.into()),
            ..Expect::default()
        };
        assert!(judge(&want("Hello"), &text, &ctx()).is_ok());
        let err = judge(&want("Hellp"), &text, &ctx()).unwrap_err();
        assert!(err.contains("offset 4"), "{err}");
        assert!(err.contains("expected 0x70 p"), "{err}");
        let fill = Expect {
            fill: Some(0),
            ..Expect::default()
        };
        assert!(judge(&fill, &crate::exec::ops::with_bytes(vec![0; 100]), &ctx()).is_ok());
        assert!(judge(&fill, &crate::exec::ops::with_bytes(vec![0, 1]), &ctx()).is_err());
    }

    #[test]
    fn recorded_values_compare() {
        let mut obs = Observation::ok();
        obs.value = Some(42);
        let same = Expect {
            same_as: Some("pfn".into()),
            ..Expect::default()
        };
        let differs = Expect {
            differs_from: Some("pfn".into()),
            ..Expect::default()
        };
        assert!(judge(&same, &obs, &ctx()).is_ok());
        assert!(judge(&differs, &obs, &ctx()).is_err());
        obs.value = Some(43);
        assert!(judge(&same, &obs, &ctx()).is_err());
        assert!(judge(&differs, &obs, &ctx()).is_ok());
    }

    #[test]
    fn diff_marks_the_differing_bytes() {
        let d = byte_diff(b"Hello from writer!", b"Hello from reader!");
        assert!(d.starts_with("bytes differ at offset 11"), "{d}");
        assert!(d.contains("|Hello from write|"), "{d}");
        assert!(d.contains("^^"), "{d}");
    }
}
