//! Loads and stores through mappings: which page an address reaches, the
//! signal an access raises there (SIGSEGV SEGV_MAPERR where nothing is
//! mapped, SEGV_ACCERR where the protection forbids it, SIGBUS BUS_ADRERR
//! on a page of an object that lies wholly past its end), and the bytes.

use super::allowed::PossibleBytes;
use super::state::{Back, Page, World};
use std::collections::BTreeMap;

/// Why an access stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The access raises this signal with this si_code.
    Fault(&'static str, &'static str),
    /// The model cannot say what happens (the reason).
    Unmodeled(String),
}

const MAPERR: Stop = Stop::Fault("SIGSEGV", "SEGV_MAPERR");
const ACCERR: Stop = Stop::Fault("SIGSEGV", "SEGV_ACCERR");
const ADRERR: Stop = Stop::Fault("SIGBUS", "BUS_ADRERR");

fn unmodeled(why: impl Into<String>) -> Stop {
    Stop::Unmodeled(why.into())
}

/// The page at `page` of `region` in process `proc`, or why an access there stops.
pub fn page_at<'a>(w: &'a World, proc: &str, region: usize, page: i64) -> Result<&'a Page, Stop> {
    let p = &w.procs[proc];
    if let Some(pg) = p.pages.get(&(region, page)) {
        if p.unsure.contains(&(region, page)) {
            return Err(unmodeled(
                "this memory may be dropped by the kernel at any time (MAP_DROPPABLE): what it holds is not modelled",
            ));
        }
        return Ok(pg);
    }
    let (lo, hi) = w.regions[region];
    if page < lo || page >= hi || p.unsure.contains(&(region, page)) {
        return Err(unmodeled(
            "the address lies outside the mappings the case made: what the kernel put there is unknown",
        ));
    }
    if let Some(&before) = p.unmapped.get(&(region, page)) {
        // A hole the case made; a later mmap that fits in it may have been put there.
        let mut start = page;
        while start > lo && !p.pages.contains_key(&(region, start - 1)) {
            start -= 1;
        }
        let mut end = page + 1;
        while end < hi && !p.pages.contains_key(&(region, end)) {
            end += 1;
        }
        let open = start == lo || end == hi;
        let run = (end - start) as u64;
        if p.placements[before..].iter().any(|l| open || *l <= run) {
            return Err(unmodeled(
                "the case unmapped this address and a later mmap or mremap may have put memory there",
            ));
        }
    }
    Err(MAPERR)
}

/// Whether a page allows loads: PROT_READ, and on x86 PROT_WRITE and PROT_EXEC too.
fn readable(w_arch_x86: bool, prot: i32) -> Result<bool, Stop> {
    if prot & libc::PROT_READ != 0 {
        return Ok(true);
    }
    if prot & (libc::PROT_WRITE | libc::PROT_EXEC) == 0 {
        return Ok(false);
    }
    if w_arch_x86 {
        Ok(true)
    } else {
        Err(unmodeled(
            "whether PROT_WRITE or PROT_EXEC without PROT_READ allows loads depends on the architecture",
        ))
    }
}

/// The bytes a page shows now, with other values a byte may hold.
/// Other values bytes of a page may hold, by offset in the page.
pub type Alternatives = BTreeMap<usize, Vec<u8>>;

pub fn page_bytes(w: &World, page: &Page) -> Result<(Vec<u8>, Alternatives), Stop> {
    let ps = w.ps;
    match &page.back {
        Back::Object { copy: Some(c), .. } => Ok((c.clone(), BTreeMap::new())),
        Back::Object { inode, index, .. } => {
            let ino = &w.inodes[*inode];
            let past = |size: u64| *index >= size.div_ceil(ps);
            if ino.size_alt.iter().any(|s| past(*s) != past(ino.size)) {
                return Err(unmodeled(
                    "after a power cut the file's size is one of several, and this page is within some of them only",
                ));
            }
            if past(ino.size) {
                return Err(ADRERR);
            }
            let base = index * ps;
            let bytes = ino
                .pages
                .get(index)
                .cloned()
                .unwrap_or_else(|| vec![0; ps as usize]);
            let mut alt: Alternatives = ino
                .alt
                .range(base..base + ps)
                .map(|(k, v)| ((k - base) as usize, v.clone()))
                .collect();
            // Write-back of the EOF page zeroes its tail past EOF before the
            // I/O (block_write_full_folio, iomap, ext4's mpage_submit_folio),
            // and may happen at any time: what was stored there may read as 0.
            if w.eof_tail_zeroed_by_writeback
                && ino.on_target
                && (base..base + ps).contains(&ino.size)
            {
                let from = (ino.size - base) as usize;
                for (i, b) in bytes.iter().enumerate().skip(from) {
                    if *b != 0 {
                        let e = alt.entry(i).or_default();
                        if !e.contains(&0) {
                            e.push(0);
                        }
                    }
                }
            }
            Ok((bytes, alt))
        }
        Back::Anon { copy, maybe_zero } => {
            let bytes = copy.clone().unwrap_or_else(|| vec![0; ps as usize]);
            let mut alt = BTreeMap::new();
            if let Some(mz) = maybe_zero {
                for (i, m) in mz.iter().enumerate() {
                    if *m && bytes[i] != 0 {
                        alt.insert(i, vec![0]);
                    }
                }
            }
            Ok((bytes, alt))
        }
    }
}

fn pages_of(ps: u64, at: i64, len: u64) -> Vec<(i64, usize, usize)> {
    // (page index, first byte in the page, bytes in the page)
    let mut out = Vec::new();
    let mut off = at;
    let end = at + len as i64;
    while off < end {
        let page = off.div_euclid(ps as i64);
        let first = off.rem_euclid(ps as i64) as usize;
        let n = ((ps as usize) - first).min((end - off) as usize);
        out.push((page, first, n));
        off += n as i64;
    }
    out
}

/// A load of `len` bytes at `at` of `region`.
pub fn load(
    w: &World,
    proc: &str,
    region: usize,
    at: i64,
    len: u64,
) -> Result<PossibleBytes, Stop> {
    let x86 = w.arch_x86;
    let mut out = PossibleBytes::exact(Vec::with_capacity(len as usize));
    for (page, first, n) in pages_of(w.ps, at, len) {
        let pg = page_at(w, proc, region, page)?;
        if !readable(x86, pg.prot)? {
            return Err(ACCERR);
        }
        let (bytes, alt) = page_bytes(w, pg)?;
        let base = out.first.len();
        out.first.extend_from_slice(&bytes[first..first + n]);
        for (i, v) in alt.range(first..first + n) {
            out.also.insert(base + i - first, v.clone());
        }
    }
    Ok(out)
}

/// Whether a write access to `len` bytes at `at` passes the protection
/// (SEGV_MAPERR where nothing is mapped, SEGV_ACCERR without PROT_WRITE).
pub fn writable(w: &World, proc: &str, region: usize, at: i64, len: u64) -> Result<(), Stop> {
    for (page, _, _) in pages_of(w.ps, at, len) {
        if page_at(w, proc, region, page)?.prot & libc::PROT_WRITE == 0 {
            return Err(ACCERR);
        }
    }
    Ok(())
}

/// A store of `data` at `at` of `region`: byte for byte, so the pages
/// before a faulting one keep what was stored.
pub fn store(w: &mut World, proc: &str, region: usize, at: i64, data: &[u8]) -> Result<(), Stop> {
    let ps = w.ps;
    let mut done = 0usize;
    for (page, first, n) in pages_of(ps, at, data.len() as u64) {
        let pg = page_at(w, proc, region, page)?.clone();
        if pg.prot & libc::PROT_WRITE == 0 {
            return Err(ACCERR);
        }
        let chunk = &data[done..done + n];
        match &pg.back {
            Back::Object {
                inode,
                index,
                shared: true,
                ..
            } => {
                let (inode, index) = (*inode, *index);
                page_bytes(w, &pg)?; // SIGBUS past the end of the object
                w.inodes[inode].write(ps, index * ps + first as u64, chunk);
            }
            Back::Object { copy, .. } => {
                let mut c = match copy {
                    Some(c) => c.clone(),
                    None => {
                        let (bytes, alt) = page_bytes(w, &pg)?;
                        if !alt.is_empty() {
                            return Err(unmodeled(
                                "a private copy of a page whose bytes are uncertain (after a power cut)",
                            ));
                        }
                        bytes
                    }
                };
                c[first..first + n].copy_from_slice(chunk);
                set_copy(w, proc, region, page, c, None);
            }
            Back::Anon { copy, maybe_zero } => {
                let mut c = copy.clone().unwrap_or_else(|| vec![0; ps as usize]);
                let mut mz = maybe_zero.clone();
                if let Some(m) = &mut mz {
                    m[first..first + n].iter_mut().for_each(|b| *b = false);
                }
                c[first..first + n].copy_from_slice(chunk);
                set_copy(w, proc, region, page, c, Some(mz));
            }
        }
        done += n;
    }
    Ok(())
}

fn set_copy(
    w: &mut World,
    proc: &str,
    region: usize,
    page: i64,
    c: Vec<u8>,
    anon: Option<Option<Vec<bool>>>,
) {
    let pg = w
        .procs
        .get_mut(proc)
        .and_then(|p| p.pages.get_mut(&(region, page)))
        .expect("the page was just found");
    match (&mut pg.back, anon) {
        (Back::Object { copy, .. }, _) => *copy = Some(c),
        (Back::Anon { copy, maybe_zero }, Some(mz)) => {
            *copy = Some(c);
            *maybe_zero = mz.filter(|m| m.iter().any(|b| *b));
        }
        (Back::Anon { copy, .. }, None) => *copy = Some(c),
    }
}

/// A write fault without a store: a private page gets its own copy of
/// what it shows (MADV_POPULATE_WRITE); shared pages stay as they are.
pub fn make_private_copy(w: &mut World, proc: &str, region: usize, page: i64) -> Result<(), Stop> {
    let pg = page_at(w, proc, region, page)?.clone();
    match &pg.back {
        Back::Object { shared: true, .. } | Back::Object { copy: Some(_), .. } => Ok(()),
        Back::Object { .. } => {
            let (bytes, alt) = page_bytes(w, &pg)?;
            if !alt.is_empty() {
                return Err(unmodeled(
                    "a private copy of a page whose bytes are uncertain (after a power cut)",
                ));
            }
            set_copy(w, proc, region, page, bytes, None);
            Ok(())
        }
        Back::Anon { copy, maybe_zero } => {
            if copy.is_none() {
                let zeros = vec![0; w.ps as usize];
                set_copy(w, proc, region, page, zeros, Some(maybe_zero.clone()));
            }
            Ok(())
        }
    }
}
