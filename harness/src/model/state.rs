//! The state the model keeps while it walks a case: files (size and bytes,
//! what a power cut may keep), open file descriptions, and each process's
//! address space page by page.
//!
//! Addresses are symbolic: a mapping the kernel placed (no MAP_FIXED) starts
//! a *region* whose base nobody can predict, and an address is a region and
//! an offset in it. Two regions never alias; holes the case makes inside a
//! region are known to be free until a later mmap could have been put there.

use std::collections::{BTreeMap, BTreeSet};

pub type InodeId = usize;
pub type OfdId = usize;

/// What a power cut may leave of a file whose data reached storage at
/// some moment: `size` and `bytes` as last made durable, and, for every
/// byte and the size, the values written since, any of which write-back
/// may already have carried to the device. A byte absent from `bytes`
/// has not changed since it was last durable: its durable value is the current one.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    pub size: u64,
    pub bytes: BTreeMap<u64, u8>,
    pub pending: BTreeMap<u64, BTreeSet<u8>>,
    pub pending_sizes: BTreeSet<u64>,
}

/// A file, a memfd or the object behind a MAP_SHARED|MAP_ANONYMOUS mapping.
#[derive(Debug, Clone, Default)]
pub struct Inode {
    pub size: u64,
    /// Page index to its bytes (a whole page, the part past EOF included);
    /// an absent page reads as zeros.
    pub pages: BTreeMap<u64, Vec<u8>>,
    /// Other values a byte may hold (after a power cut: an older one).
    pub alt: BTreeMap<u64, Vec<u8>>,
    /// Other sizes the file may have (after a power cut).
    pub size_alt: Vec<u64>,
    /// A file of the target filesystem (not a memfd or anonymous memory).
    pub on_target: bool,
    /// Made by a step (O_CREAT), not among the case's starting files:
    /// whether its name survives a power cut is not modelled.
    pub created: bool,
    /// Tracked only for targets that can crash.
    pub durable: Option<Durable>,
    /// Integers plain increments raced on (`together`): where, their
    /// width, and the range the value lies in. Their bytes also have
    /// every value the range allows as alternatives, so any other read is judged too.
    pub counters: Vec<Counter>,
}

/// An integer in an object whose value is known to a range only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub at: u64,
    pub width: u64,
    pub lo: u64,
    pub hi: u64,
}

impl Inode {
    pub fn byte(&self, ps: u64, off: u64) -> u8 {
        self.pages
            .get(&(off / ps))
            .map_or(0, |p| p[(off % ps) as usize])
    }

    /// Sets bytes, page by page; records what a power cut may now keep.
    pub fn write(&mut self, ps: u64, off: u64, data: &[u8]) {
        let end = off + data.len() as u64;
        self.counters
            .retain(|c| c.at + c.width <= off || end <= c.at);
        for (i, b) in data.iter().enumerate() {
            let at = off + i as u64;
            self.alt.remove(&at);
            let old = self.byte(ps, at);
            if old == *b && !self.pages.contains_key(&(at / ps)) && *b == 0 {
                continue;
            }
            let page = self
                .pages
                .entry(at / ps)
                .or_insert_with(|| vec![0; ps as usize]);
            page[(at % ps) as usize] = *b;
            if let Some(d) = &mut self.durable {
                if old != *b {
                    d.bytes.entry(at).or_insert(old);
                    d.pending.entry(at).or_default().insert(*b);
                }
            }
        }
    }

    /// Zeros `from..to`, dropping whole pages where it can.
    pub fn zero(&mut self, ps: u64, from: u64, to: u64) {
        let touched: Vec<u64> = self
            .pages
            .range(from / ps..to.div_ceil(ps))
            .map(|(k, _)| *k)
            .collect();
        for p in touched {
            let lo = (p * ps).max(from);
            let hi = ((p + 1) * ps).min(to);
            let zeros = vec![0; (hi - lo) as usize];
            self.write(ps, lo, &zeros);
        }
        let alts: Vec<u64> = self.alt.range(from..to).map(|(k, _)| *k).collect();
        for a in alts {
            self.alt.remove(&a);
        }
    }

    /// ftruncate: a shrink cuts the bytes past the new end (the rest of
    /// the page too); a growth shows zeros from the old end on, as
    /// POSIX ftruncate requires (bytes a mapping stored past the old end
    /// of file do not become file data).
    pub fn set_size(&mut self, ps: u64, new: u64) {
        let old = self.size;
        if new > old {
            // The extended area reads as zeros (POSIX ftruncate). Bytes
            // stored past the new EOF in its page stay as memory holds
            // them, unless the filesystem zeroes the rest of the EOF block
            // as it extends (ext4 since 6.13): either is allowed.
            self.zero(ps, old, new);
            for at in new..new.div_ceil(ps) * ps {
                if self.byte(ps, at) != 0 {
                    self.alt.insert(at, vec![0]);
                }
            }
        } else {
            // Truncation drops the bytes past the new end and zeroes the
            // rest of the new EOF page (what a power cut may keep of them
            // is recorded by zero()).
            self.zero(ps, new, (new.div_ceil(ps) * ps).max(old));
        }
        self.pages.retain(|k, _| *k < new.div_ceil(ps));
        self.size = new;
        self.size_alt.clear();
        if let Some(d) = &mut self.durable {
            d.pending_sizes.insert(new);
        }
    }

    /// Makes the `width` bytes at `at` an integer in `lo..=hi` (native
    /// endian): the bytes hold `hi` first, with every byte value the range
    /// allows as alternatives.
    pub fn set_counter(&mut self, ps: u64, c: Counter) {
        let bytes = c.hi.to_ne_bytes();
        self.write(ps, c.at, &bytes[..c.width as usize]);
        for k in 0..c.width {
            let values: Vec<u8> = if c.hi - c.lo >= 1 << 16 {
                (0..=255).collect()
            } else {
                let mut v: Vec<u8> = (c.lo..=c.hi).map(|x| x.to_ne_bytes()[k as usize]).collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let first = bytes[k as usize];
            let others: Vec<u8> = values.into_iter().filter(|v| *v != first).collect();
            if !others.is_empty() {
                self.alt.insert(c.at + k, others);
            }
        }
        self.counters.push(c);
    }

    /// The counter that is exactly the bytes `at..at + len`, if any.
    pub fn counter(&self, at: u64, len: u64) -> Option<Counter> {
        self.counters
            .iter()
            .copied()
            .find(|c| c.at == at && c.width == len)
    }

    /// The file's data and size are on the storage now.
    pub fn make_durable(&mut self, ps: u64, range: Option<(u64, u64)>) {
        let Some(mut d) = self.durable.take() else {
            return;
        };
        let (lo, hi) = range.unwrap_or((0, u64::MAX));
        let keys: Vec<u64> = d.pending.range(lo..hi).map(|(k, _)| *k).collect();
        for k in keys {
            d.pending.remove(&k);
            d.bytes.insert(k, self.byte(ps, k));
        }
        if self.size > hi {
            // A ranged sync (msync MS_SYNC) carries the range's data and
            // the size needed to read it back, not the growth of the file
            // past the range: ext4 writes i_disksize only up to the pages
            // written back (found by explore, ext4 seed 2027 case 3753).
            // The durable size is at least the range's end; any size set
            // since, up to the current one, may also have reached storage.
            if d.size < hi {
                d.size = hi;
            }
            let floor = d.size;
            d.pending_sizes.retain(|s| *s > floor);
            d.pending_sizes.insert(self.size);
        } else {
            d.size = self.size;
            d.pending_sizes.clear();
        }
        self.durable = Some(d);
    }
}

/// An open file description: shared by the fds fork copies.
#[derive(Debug, Clone)]
pub struct Ofd {
    pub inode: InodeId,
    pub read: bool,
    pub write: bool,
    pub append: bool,
    /// O_PATH: no I/O, no mapping.
    pub path_only: bool,
    /// O_DIRECT: I/O bypasses the page cache, with alignment rules.
    pub direct: bool,
    pub offset: u64,
}

/// What a page of a mapping shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Back {
    /// A page of an object: a file, a memfd, or shared anonymous memory.
    /// `copy` is the private copy a store into a MAP_PRIVATE mapping made;
    /// while it is None the page follows the object.
    Object {
        inode: InodeId,
        index: u64,
        shared: bool,
        copy: Option<Vec<u8>>,
    },
    /// Private anonymous memory: zeros until stored to. `maybe_zero`:
    /// MADV_FREE let the kernel drop the page, so each byte not stored
    /// to since may read as zero.
    Anon {
        copy: Option<Vec<u8>>,
        maybe_zero: Option<Vec<bool>>,
    },
}

/// One page of a process's address space.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub prot: i32,
    /// Whether PROT_WRITE may be added (a shared mapping of an fd opened
    /// for writing, or a private mapping).
    pub maywrite: bool,
    pub back: Back,
    pub dontfork: bool,
    pub wipeonfork: bool,
    /// mlock'ed (not inherited by a fork child).
    pub locked: bool,
    /// The mapping (mmap call) the page came from: mremap moves whole ones.
    pub vma: u64,
}

/// Where a name of the case points: a region and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRef {
    pub region: usize,
    pub at: i64,
    pub len: u64,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Exited(i32),
    Killed(String),
    /// Killed by a power cut with everything else, and reaped by the harness.
    Crashed,
}

/// A process of the case.
#[derive(Debug, Clone, Default)]
pub struct Proc {
    pub parent: Option<String>,
    pub end: Option<End>,
    pub reaped: bool,
    pub fds: BTreeMap<String, OfdId>,
    pub maps: BTreeMap<String, MapRef>,
    /// (region, page index) to the page mapped there.
    pub pages: BTreeMap<(usize, i64), Page>,
    /// Pages the case unmapped, with the number of placements made before.
    pub unmapped: BTreeMap<(usize, i64), usize>,
    /// Lengths (in pages) of the mappings the kernel placed, in order.
    pub placements: Vec<u64>,
    /// Pages that may or may not be mapped (mremap may have grown in
    /// place or moved).
    pub unsure: BTreeSet<(usize, i64)>,
}

impl Proc {
    pub fn alive(&self) -> bool {
        self.end.is_none()
    }
}

/// Everything the model knows at one point of a case.
#[derive(Debug, Clone, Default)]
pub struct World {
    pub ps: u64,
    pub inodes: Vec<Inode>,
    /// Names in the case's directory.
    pub dir: BTreeMap<String, InodeId>,
    pub ofds: Vec<Ofd>,
    pub procs: BTreeMap<String, Proc>,
    /// Each region's extent in pages, [lo, hi).
    pub regions: Vec<(i64, i64)>,
    pub next_vma: u64,
    /// The filesystem was mounted again read-only.
    pub read_only: bool,
    /// The case crashes: track what reaches storage.
    pub track_durability: bool,
    pub crashed: bool,
    /// Starting files the case unlinked: whether the removal of the name
    /// reached the storage before a power cut is not modelled.
    pub unlinked: Vec<String>,
    /// x86: PROT_WRITE and PROT_EXEC imply PROT_READ.
    pub arch_x86: bool,
    /// The target writes pages back to storage (`writeback`): writing the
    /// EOF page back zeroes its bytes past EOF in the page cache, so bytes
    /// stored there through a shared mapping may read back as zeros.
    pub eof_tail_zeroed_by_writeback: bool,
}

impl World {
    pub fn new_inode(&mut self, mut inode: Inode) -> InodeId {
        if self.track_durability && inode.on_target {
            inode.durable = Some(Durable {
                size: inode.size,
                bytes: BTreeMap::new(),
                pending: BTreeMap::new(),
                pending_sizes: BTreeSet::new(),
            });
        }
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    pub fn new_region(&mut self, pages: i64) -> usize {
        self.regions.push((0, pages));
        self.regions.len() - 1
    }

    pub fn vma_id(&mut self) -> u64 {
        self.next_vma += 1;
        self.next_vma
    }
}
