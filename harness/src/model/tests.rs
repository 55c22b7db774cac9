//! The model's rules, one case each: what it predicts for short cases.

use super::*;
use crate::case::model::Probe;
use crate::exec::protocol::{Observation, Outcome};
use crate::target::capability::Measured;

fn env(fs: &str, caps: &[(Probe, bool)]) -> Environment {
    let mut e = Environment::probe(std::path::Path::new("/"));
    e.fs_type = fs.to_string();
    e.page_size = 4096;
    e.arch = "x86_64".to_string();
    e.kernel_release = "6.12.0".to_string();
    e.euid = 0;
    for p in [
        Probe::Writable,
        Probe::ODirect,
        Probe::MadvRemove,
        Probe::Persistent,
        Probe::SharedMmap,
        Probe::SharedWritableMmap,
    ] {
        let present = caps.iter().find(|(q, _)| *q == p).is_none_or(|(_, v)| *v);
        e.capabilities.insert(
            p,
            Measured {
                present,
                detail: String::new(),
            },
        );
    }
    e
}

fn case(files: &str, steps: &str) -> Case {
    let text = format!(r#"{{"title":"t","refs":["r"],"files":{files},"steps":[{steps}]}}"#);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Every step's prediction, in order.
fn predict_all(c: &Case, e: &Environment) -> Vec<Allowed> {
    match predict(c, e) {
        Ok(p) => p.steps.into_iter().map(|s| s.allowed).collect(),
        Err(u) => panic!("unmodeled step {}: {}", u.step, u.why),
    }
}

fn text(t: &str) -> Allowed {
    Allowed::Bytes(PossibleBytes::exact(t.as_bytes().to_vec()))
}

fn zeros(n: usize) -> Allowed {
    Allowed::Bytes(PossibleBytes::exact(vec![0; n]))
}

const OPEN: &str = r#"{"in":"p","do":"open","path":"f","flags":"O_RDWR","as":"fd"}"#;

/// A case whose process `p` opens file `f` and maps it READ|WRITE as `m`
/// (steps 1 and 2), then does `steps`.
fn mapped(files: &str, len: &str, flags: &str, steps: &str) -> Case {
    let map = format!(
        r#"{{"in":"p","do":"mmap","fd":"fd","len":"{len}","prot":"READ|WRITE","flags":"{flags}","as":"m"}}"#
    );
    case(files, &format!("{OPEN}, {map}, {steps}"))
}

#[test]
fn a_private_page_follows_the_file_until_written() {
    let c = mapped(
        r#"{"f":{"size":"2p"}}"#,
        "2p",
        "PRIVATE",
        r#"{"in":"p","do":"pwrite","fd":"fd","at":0,"text":"file"},
            {"in":"p","do":"load","map":"m","len":4},
            {"in":"p","do":"store","map":"m","text":"mine"},
            {"in":"p","do":"pwrite","fd":"fd","at":0,"text":"next"},
            {"in":"p","do":"load","map":"m","len":4},
            {"do":"check_file","path":"f","len":4},
            {"in":"p","do":"madvise","map":"m","advice":"DONTNEED"},
            {"in":"p","do":"load","map":"m","len":4}"#,
    );
    let a = predict_all(&c, &env("ext4", &[]));
    assert_eq!(a[2], Allowed::value(4));
    assert_eq!(a[3], text("file"));
    assert_eq!(a[6], text("mine"));
    assert_eq!(a[7], text("next"));
    assert_eq!(
        a[9],
        text("next"),
        "DONTNEED drops the copy: the file shows again"
    );
}

#[test]
fn faults_past_the_end_of_file_and_of_the_protection() {
    let c = mapped(
        r#"{"f":{"text":"0123456789"}}"#,
        "2p",
        "SHARED",
        r#"{"in":"p","do":"load","map":"m","at":10,"len":2},
            {"in":"p","do":"store","map":"m","at":100,"text":"XY"},
            {"do":"check_file","path":"f"},
            {"in":"p","do":"load","map":"m","at":"1p","len":1},
            {"in":"p","do":"mprotect","map":"m","prot":"READ"},
            {"in":"p","do":"store","map":"m","text":"a"},
            {"in":"p","do":"munmap","map":"m"},
            {"in":"p","do":"load","map":"m","len":1}"#,
    );
    let a = predict_all(&c, &env("ext4", &[]));
    assert_eq!(a[2], zeros(2), "the rest of the EOF page reads zeros");
    assert_eq!(
        a[4],
        text("0123456789"),
        "a store past EOF never reaches the file"
    );
    assert_eq!(a[5], Allowed::signal("SIGBUS", "BUS_ADRERR"));
    assert_eq!(a[7], Allowed::signal("SIGSEGV", "SEGV_ACCERR"));
    assert_eq!(a[9], Allowed::signal("SIGSEGV", "SEGV_MAPERR"));
}

#[test]
fn truncation_cuts_private_copies_too_and_growth_shows_zeros() {
    let c = mapped(
        r#"{"f":{"size":"2p"}}"#,
        "2p",
        "PRIVATE",
        r#"{"in":"p","do":"store","map":"m","at":"1p","text":"copied"},
            {"in":"p","do":"ftruncate","fd":"fd","len":"1p"},
            {"in":"p","do":"load","map":"m","at":"1p","len":6},
            {"in":"p","do":"ftruncate","fd":"fd","len":"2p"},
            {"in":"p","do":"load","map":"m","at":"1p","len":6}"#,
    );
    let a = predict_all(&c, &env("ext4", &[]));
    assert_eq!(a[4], Allowed::signal("SIGBUS", "BUS_ADRERR"));
    assert_eq!(a[6], zeros(6));
}

#[test]
fn fork_copies_private_memory_shares_shared_and_obeys_dontfork_and_wipeonfork() {
    let c = case(
        "{}",
        r#"{"in":"p","do":"mmap","len":"1p","prot":"READ|WRITE","flags":"PRIVATE|ANONYMOUS","as":"priv"},
        {"in":"p","do":"mmap","len":"1p","prot":"READ|WRITE","flags":"SHARED|ANONYMOUS","as":"sh"},
        {"in":"p","do":"mmap","len":"1p","prot":"READ|WRITE","flags":"PRIVATE|ANONYMOUS","as":"gone"},
        {"in":"p","do":"mmap","len":"1p","prot":"READ|WRITE","flags":"PRIVATE|ANONYMOUS","as":"wiped"},
        {"in":"p","do":"store","map":"priv","text":"before"},
        {"in":"p","do":"store","map":"wiped","text":"secret"},
        {"in":"p","do":"madvise","map":"gone","advice":"DONTFORK"},
        {"in":"p","do":"madvise","map":"wiped","advice":"WIPEONFORK"},
        {"in":"p","do":"fork","as":"c"},
        {"in":"c","do":"store","map":"priv","text":"child!"},
        {"in":"c","do":"store","map":"sh","text":"shared"},
        {"in":"p","do":"load","map":"priv","len":6},
        {"in":"p","do":"load","map":"sh","len":6},
        {"in":"c","do":"load","map":"gone","len":1},
        {"in":"c","do":"load","map":"wiped","len":6},
        {"in":"c","do":"exit","code":3},
        {"do":"wait","proc":"c"}"#,
    );
    let a = predict_all(&c, &env("tmpfs", &[]));
    assert_eq!(a[11], text("before"));
    assert_eq!(a[12], text("shared"));
    assert_eq!(a[13], Allowed::signal("SIGSEGV", "SEGV_MAPERR"));
    assert_eq!(a[14], zeros(6));
    assert_eq!(
        a[16],
        Allowed::Exit(crate::exec::protocol::ExitStatus::Exited(3))
    );
}

#[test]
fn msync_flag_rules() {
    let c = mapped(
        r#"{"f":{"size":"1p"}}"#,
        "1p",
        "SHARED",
        r#"{"in":"p","do":"msync","map":"m","flags":"MS_SYNC|MS_ASYNC"},
            {"in":"p","do":"msync","map":"m","flags":"0x100"},
            {"in":"p","do":"msync","map":"m","at":1,"len":1,"flags":"MS_SYNC"},
            {"in":"p","do":"msync","map":"m","len":0,"flags":"MS_ASYNC"},
            {"in":"p","do":"msync","map":"m","flags":"MS_INVALIDATE"}"#,
    );
    let a = predict_all(&c, &env("xfs", &[]));
    assert_eq!(a[2], Allowed::errno("EINVAL"));
    assert_eq!(a[3], Allowed::errno("EINVAL"));
    assert_eq!(a[4], Allowed::errno("EINVAL"));
    assert_eq!(a[5], Allowed::Success);
    assert_eq!(a[6], Allowed::Success);
}

#[test]
fn a_crash_keeps_what_ms_sync_covered_and_may_keep_the_rest() {
    let steps = format!(
        r#"{OPEN},
        {{"in":"p","do":"mmap","fd":"fd","len":"2p","prot":"READ|WRITE","flags":"SHARED","as":"m"}},
        {{"in":"p","do":"store","map":"m","text":"synced"}},
        {{"in":"p","do":"store","map":"m","at":"1p","text":"maybe"}},
        {{"in":"p","do":"msync","map":"m","len":"1p","flags":"MS_SYNC"}},
        {{"do":"crash"}},
        {{"do":"check_file","path":"f","len":6}},
        {{"do":"check_file","path":"f","at":"1p","len":5}}"#
    );
    let c = case(r#"{"f":{"size":"2p"}}"#, &steps);
    let a = predict_all(&c, &env("ext4", &[]));
    assert_eq!(a[6], text("synced"));
    let Allowed::Bytes(b) = &a[7] else {
        panic!("{:?}", a[7])
    };
    assert!(b.admits(b"maybe") && b.admits(&[0; 5]) && !b.admits(b"other"));
    assert_eq!(
        a[7].as_expect(),
        None,
        "several outcomes: the step observes"
    );
    let lost = predict_all(&c, &env("tmpfs", &[(Probe::Persistent, false)]));
    assert_eq!(lost[6], Allowed::errno("ENOENT"));
}

#[test]
fn a_hole_a_later_mmap_may_fill_is_not_predicted() {
    let c = case(
        "{}",
        r#"{"in":"p","do":"mmap","len":"3p","prot":"READ|WRITE","flags":"PRIVATE|ANONYMOUS","as":"m"},
        {"in":"p","do":"munmap","map":"m","at":"1p","len":"1p"},
        {"in":"p","do":"load","map":"m","at":"1p","len":1},
        {"in":"p","do":"mmap","len":"1p","prot":"READ","flags":"PRIVATE|ANONYMOUS","as":"n"},
        {"in":"p","do":"load","map":"m","at":"1p","len":1}"#,
    );
    let e = env("tmpfs", &[]);
    let (done, stop) = predict_prefix(&c, &e);
    assert_eq!(done[2].allowed, Allowed::signal("SIGSEGV", "SEGV_MAPERR"));
    assert_eq!(stop.map(|u| u.step), Some("5".to_string()));
}

#[test]
fn annotate_writes_the_model_expectations() {
    let c = case(
        r#"{"f":{"text":"abc"}}"#,
        &format!(
            r#"{OPEN},
            {{"in":"p","do":"pread","fd":"fd","at":0,"len":3,"expect":{{"text":"zzz"}},
              "variants":[{{"when":{{"fs":["xfs"]}},"expect":{{"errno":"EIO"}},"why":"w"}}]}}"#
        ),
    );
    let out = annotate(&c, &env("ext4", &[])).unwrap();
    let s = &out.steps[1];
    assert!(s.variants.is_empty());
    assert_eq!(
        s.expect.as_ref().and_then(|e| e.text.as_deref()),
        Some("abc")
    );
    assert_eq!(out.steps[0].expect, None, "plain success stays implicit");
}

#[test]
fn allowed_sets_judge_observations_and_expectations() {
    let either = Allowed::one_of(vec![Allowed::Success, Allowed::errno("EINVAL")]);
    assert!(either.admits(&Observation::ok(), 4096));
    assert!(either.admits(&Observation::errno(libc::EINVAL), 4096));
    assert!(!either.admits(&Observation::errno(libc::ENOMEM), 4096));
    let bus = Observation::of(Outcome::Signal {
        signal: "SIGBUS".into(),
        si_code: "BUS_ADRERR".into(),
        offset: 0,
        done: 0,
        map_offset: 0,
    });
    assert!(Allowed::signal("SIGBUS", "BUS_ADRERR").admits(&bus, 4096));
    assert!(!Allowed::signal("SIGBUS", "BUS_OBJERR").admits(&bus, 4096));
    let e: crate::case::model::Expect = serde_json::from_str(r#"{"fill":0}"#).unwrap();
    assert!(zeros(8).admits_expect(&e, 4096));
    assert!(!text("abc").admits_expect(&e, 4096));
    let e: crate::case::model::Expect = serde_json::from_str(r#"{"errno":"EINVAL"}"#).unwrap();
    assert!(either.admits_expect(&e, 4096));
    assert!(!Allowed::Success.admits_expect(&e, 4096));
    assert_eq!(zeros(8).as_expect().and_then(|e| e.fill), Some(0));
    assert_eq!(
        Allowed::value(4).as_expect().and_then(|e| e.value),
        Some(crate::case::model::Size::Bytes(4))
    );
}

#[test]
fn mremap_of_a_range_split_by_madvise_is_efault_and_merged_back_is_not() {
    let c = case(
        "{}",
        r#"{"in":"p","do":"mmap","len":"2p","prot":"READ|WRITE","flags":"PRIVATE|ANONYMOUS","as":"m"},
        {"in":"p","do":"madvise","map":"m","len":1,"advice":"DONTFORK"},
        {"in":"p","do":"mremap","map":"m","old_len":"2p","new_len":"1p","flags":"MAYMOVE|FIXED","new_addr":{"map":"m","at":"4p"}},
        {"in":"p","do":"madvise","map":"m","len":1,"advice":"DOFORK"},
        {"in":"p","do":"mmap","len":"8p","prot":"NONE","flags":"PRIVATE|ANONYMOUS","as":"far"},
        {"in":"p","do":"mremap","map":"m","old_len":"2p","new_len":"2p","flags":"MAYMOVE|FIXED","new_addr":{"map":"far"}}"#,
    );
    let a = predict_all(&c, &env("tmpfs", &[]));
    assert_eq!(a[2], Allowed::errno("EFAULT"));
    assert_eq!(a[5], Allowed::Success);
}

#[test]
fn annotate_leaves_a_short_read_to_observe() {
    let c = case(
        r#"{"f":{"text":"abc"}}"#,
        &format!(r#"{OPEN}, {{"in":"p","do":"pread","fd":"fd","at":1,"len":10}}"#),
    );
    let out = annotate(&c, &env("ext4", &[])).unwrap();
    assert!(out.steps[1].observe && out.steps[1].expect.is_none());
    assert_eq!(predict_all(&c, &env("ext4", &[]))[1], text("bc"));
}

#[test]
fn plain_increments_that_race_give_a_range() {
    let c = case(
        "{}",
        r#"{"in":"p","do":"mmap","len":"1p","prot":"READ|WRITE","flags":"SHARED|ANONYMOUS","as":"m"},
        {"in":"p","do":"fork","as":"c"},
        {"do":"together","steps":[
            {"in":"p","do":"increment","map":"m","count":1000},
            {"in":"c","do":"increment","map":"m","count":1000},
            {"in":"p","do":"increment","map":"m","at":8,"count":5}]},
        {"in":"p","do":"load","map":"m","len":4},
        {"in":"c","do":"increment","map":"m","count":1,"atomic":true},
        {"in":"c","do":"load","map":"m","len":4},
        {"in":"c","do":"load","map":"m","at":8,"len":4}"#,
    );
    let a = predict_all(&c, &env("tmpfs", &[]));
    assert_eq!(a[5], Allowed::Value { lo: 2, hi: 2000 });
    assert_eq!(a[7], Allowed::Value { lo: 3, hi: 2001 });
    assert!(a[8].admits(
        &crate::exec::ops::with_bytes(5u32.to_ne_bytes().to_vec()),
        4096
    ));
    let e: crate::case::model::Expect = serde_json::from_str(r#"{"range":[1000,2000]}"#).unwrap();
    assert!(a[5].admits_expect(&e, 4096));
    let e: crate::case::model::Expect = serde_json::from_str(r#"{"value":2000}"#).unwrap();
    assert!(
        a[5].admits_expect(&e, 4096),
        "a case may expect one allowed value"
    );
}

#[test]
fn an_atomic_increment_is_a_write_and_a_hole_maybe_refilled_is_not_unmapped_blindly() {
    let c = case(
        "{}",
        r#"{"in":"p","do":"memfd_create","as":"fd"},
        {"in":"p","do":"mmap","fd":"fd","len":1,"prot":"READ","flags":"SHARED","as":"m"},
        {"in":"p","do":"increment","map":"m","count":1,"atomic":true},
        {"in":"p","do":"increment","map":"m","count":1},
        {"in":"p","do":"increment","map":"m","count":0},
        {"in":"p","do":"munmap","map":"m"},
        {"in":"p","do":"mmap","len":"1p","prot":"READ|WRITE","flags":"SHARED|ANONYMOUS","as":"n"},
        {"in":"p","do":"munmap","map":"m"}"#,
    );
    let (a, stop) = predict_prefix(&c, &env("tmpfs", &[]));
    assert_eq!(a[2].allowed, Allowed::signal("SIGSEGV", "SEGV_ACCERR"));
    assert_eq!(
        a[3].allowed,
        Allowed::signal("SIGBUS", "BUS_ADRERR"),
        "a plain increment loads first"
    );
    assert_eq!(a[4].allowed, Allowed::Success);
    assert_eq!(stop.map(|u| u.step), Some("8".to_string()));
}

/// Found by explore (ext4, seed 2026, case 4031): a pwrite that extends the
/// file zeroes only the gap before its data; bytes stored past the new EOF
/// stay as memory holds them (or zero, where write-back or the filesystem
/// zeroes the EOF page's tail), and a write-back target allows both.
#[test]
fn a_write_extending_the_file_leaves_bytes_past_its_end() {
    let c = mapped(
        r#"{"f":{"size":"1p+1"}}"#,
        "2p",
        "SHARED",
        r#"{"in":"p","do":"store","map":"m","at":"1p","fill":230,"len":8},
           {"in":"p","do":"pwrite","fd":"fd","at":"1p","text":"ab"},
           {"in":"p","do":"load","map":"m","at":"1p","len":4}"#,
    );
    let got = predict_all(&c, &env("tmpfs", &[]));
    let Allowed::Bytes(b) = &got[4] else {
        panic!("{:?}", got[4])
    };
    assert!(b.admits(b"ab\xe6\xe6"), "{b:?}");
    assert!(b.admits(b"ab\0\0"), "{b:?}");
    assert!(!b.admits(b"ab\xe6\x01"), "{b:?}");
    assert!(!b.admits(b"\0b\xe6\xe6"), "{b:?}");
}

/// A truncation that never reached the storage may be undone by a power
/// cut: the old bytes are among what the file may hold after it.
#[test]
fn a_truncation_lost_in_a_crash_may_leave_the_old_bytes() {
    let c = case(
        r#"{"f":{"size":1,"fill":118,"len":1}}"#,
        &format!(
            r#"{OPEN}, {{"in":"p","do":"ftruncate","fd":"fd","len":0}},
               {{"do":"crash"}}, {{"do":"check_file","path":"f"}}"#
        ),
    );
    let got = predict_all(&c, &env("ext4", &[]));
    let obs = |b: &[u8]| Observation {
        bytes: Some(b.to_vec()),
        ..Observation::of(Outcome::Ok)
    };
    assert!(got[3].admits(&obs(b"v"), 4096), "{:?}", got[3]);
    assert!(got[3].admits(&obs(b""), 4096), "{:?}", got[3]);
    assert!(!got[3].admits(&obs(b"w"), 4096), "{:?}", got[3]);
}

/// Found by explore (ext4, seed 2027, case 3753): msync(MS_SYNC) of the
/// first page of a file a pwrite grew past it makes that page durable and a
/// size that reads it back, not necessarily the whole growth.
#[test]
fn a_ranged_msync_does_not_carry_the_growth_past_its_range() {
    let c = case(
        r#"{"f":{"size":0}}"#,
        &format!(
            r#"{OPEN}, {{"in":"p","do":"mmap","fd":"fd","len":1,"prot":"READ|WRITE","flags":"SHARED","as":"m"}},
               {{"in":"p","do":"pwrite","fd":"fd","at":0,"fill":90,"len":4124}},
               {{"in":"p","do":"msync","map":"m","flags":"MS_SYNC"}},
               {{"do":"crash"}}, {{"do":"check_file","path":"f"}}"#
        ),
    );
    let got = predict_all(&c, &env("ext4", &[]));
    let obs = |n: usize| Observation {
        bytes: Some(vec![90; n]),
        ..Observation::of(Outcome::Ok)
    };
    assert!(got[5].admits(&obs(4096), 4096), "{:?}", got[5]);
    assert!(got[5].admits(&obs(4124), 4096), "{:?}", got[5]);
    assert!(!got[5].admits(&obs(0), 4096), "{:?}", got[5]);
}

/// Found by explore (xfs, seed 2027, case 7895): an atomic increment into a
/// private page that still follows the file, racing one through a shared
/// mapping of that page, copies the page at an instant the case cannot
/// know, so the private value is not predictable.
#[test]
fn a_private_copy_made_while_another_process_writes_the_page_is_unmodeled() {
    let c = mapped(
        r#"{"f":{"size":"1p"}}"#,
        "1p",
        "PRIVATE",
        r#"{"in":"q","do":"open","path":"f","flags":"O_RDWR","as":"g"},
           {"in":"q","do":"mmap","fd":"g","len":"1p","prot":"READ|WRITE","flags":"SHARED","as":"s"},
           {"do":"together","steps":[
             {"in":"p","do":"increment","map":"m","count":5,"atomic":true},
             {"in":"q","do":"increment","map":"s","count":7,"atomic":true}]},
           {"in":"p","do":"load","map":"m","len":4}"#,
    );
    assert!(
        predict(&c, &env("ext4", &[])).is_err(),
        "the private value was predicted"
    );
}
