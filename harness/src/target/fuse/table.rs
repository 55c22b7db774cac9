//! The server's map from FUSE node ids to backing paths.
//!
//! A node id is the backing file's inode number (the root is 1, as FUSE
//! requires): it stays the same across lookups, renames and forgets
//! without any bookkeeping of ours, so `st_ino` through the mount is
//! stable, and the kernel's FORGETs can be ignored. This needs a backing
//! filesystem that does not reuse an inode number while the kernel may
//! still know the old file: tmpfs hands out numbers from a counter.
//!
//! A node whose path is gone (unlinked while open) has no entry here; the
//! server then serves it from an open handle's descriptor.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

pub const ROOT: u64 = 1;

#[derive(Debug)]
pub struct Table {
    /// The backing root's own inode number, which is node 1 to the kernel.
    root_ino: u64,
    paths: HashMap<u64, PathBuf>,
}

impl Table {
    pub fn new(root: &Path, root_ino: u64) -> Table {
        Table {
            root_ino,
            paths: HashMap::from([(ROOT, root.to_path_buf())]),
        }
    }

    /// The node id of the backing inode `st_ino`.
    pub fn node(&self, st_ino: u64) -> u64 {
        if st_ino == self.root_ino {
            ROOT
        } else {
            st_ino
        }
    }

    pub fn path(&self, node: u64) -> Option<&Path> {
        self.paths.get(&node).map(PathBuf::as_path)
    }

    /// The backing path of `name` in directory `parent`, if `parent` is known.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        // The kernel resolves "." and ".." itself and never sends a name with '/'.
        Some(self.path(parent)?.join(name))
    }

    /// Records that `node` is at `path` (after a lookup, create or mkdir).
    pub fn remember(&mut self, node: u64, path: PathBuf) {
        self.paths.insert(node, path);
    }

    /// `path` is gone (unlink, rmdir, replaced by a rename): the node that
    /// was there has no path any more.
    pub fn removed(&mut self, path: &Path) {
        self.paths.retain(|n, p| *n == ROOT || p != path);
    }

    /// `from` was renamed to `to`: it and, for a directory, everything
    /// under it move. Whatever was at `to` must be `removed` first.
    pub fn renamed(&mut self, from: &Path, to: &Path) {
        for p in self.paths.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }

    /// RENAME_EXCHANGE of `a` and `b`.
    pub fn exchanged(&mut self, a: &Path, b: &Path) {
        for p in self.paths.values_mut() {
            let (from, to) = if p.starts_with(a) { (a, b) } else { (b, a) };
            if let Ok(rest) = p.strip_prefix(from) {
                *p = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::new(Path::new("/b"), 77);
        t.remember(10, "/b/d".into());
        t.remember(11, "/b/d/f".into());
        t.remember(12, "/b/g".into());
        t.remember(13, "/b/dd".into());
        t
    }

    #[test]
    fn the_root_is_node_one() {
        let t = table();
        assert_eq!(t.node(77), ROOT);
        assert_eq!(t.node(10), 10);
        assert_eq!(t.path(ROOT), Some(Path::new("/b")));
        assert_eq!(t.child(10, OsStr::new("x")), Some("/b/d/x".into()));
        assert_eq!(t.child(99, OsStr::new("x")), None);
    }

    #[test]
    fn renaming_a_directory_moves_what_is_under_it_only() {
        let mut t = table();
        t.removed(Path::new("/b/e"));
        t.renamed(Path::new("/b/d"), Path::new("/b/e"));
        assert_eq!(t.path(10), Some(Path::new("/b/e")));
        assert_eq!(t.path(11), Some(Path::new("/b/e/f")));
        // "/b/dd" merely shares a string prefix with "/b/d".
        assert_eq!(t.path(13), Some(Path::new("/b/dd")));
    }

    #[test]
    fn a_replaced_or_unlinked_file_loses_its_path() {
        let mut t = table();
        t.removed(Path::new("/b/g"));
        t.renamed(Path::new("/b/d/f"), Path::new("/b/g"));
        assert_eq!(t.path(11), Some(Path::new("/b/g")));
        assert_eq!(t.path(12), None);
        t.removed(Path::new("/b/g"));
        assert_eq!(t.path(11), None);
        t.removed(Path::new("/b"));
        assert_eq!(t.path(ROOT), Some(Path::new("/b")));
    }

    #[test]
    fn exchange_swaps_both_subtrees() {
        let mut t = table();
        t.exchanged(Path::new("/b/d"), Path::new("/b/g"));
        assert_eq!(t.path(10), Some(Path::new("/b/g")));
        assert_eq!(t.path(11), Some(Path::new("/b/g/f")));
        assert_eq!(t.path(12), Some(Path::new("/b/d")));
        assert_eq!(t.path(13), Some(Path::new("/b/dd")));
    }
}
