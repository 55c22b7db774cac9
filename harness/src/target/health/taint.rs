//! The kernel's taint flags (/proc/sys/kernel/tainted), as LTP checks
//! them: a bit the kernel set during a run says it hit a warning (W), a bad
//! page (B), a soft lockup (L), an oops (D) ...

/// The letters of the taint bits, bit 0 first, as the kernel prints them
/// (Documentation/admin-guide/tainted-kernels.rst).
const LETTERS: &[u8] = b"PFSRMBUDAWCIOELKXTN";

/// The taint mask now; None when it cannot be read.
pub fn read() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/tainted")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The flags of `mask` as letters ("W", "BL"), or "none".
pub fn letters(mask: u64) -> String {
    let s: String = LETTERS
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, c)| *c as char)
        .collect();
    let unknown = mask & !((1u64 << LETTERS.len()) - 1);
    match (s.is_empty(), unknown) {
        (true, 0) => "none".to_string(),
        (_, 0) => s,
        _ => format!("{s}+{unknown:#x}"),
    }
}

/// Says which flags the kernel set between two readings, or None when none.
pub fn newly_set(before: u64, after: u64) -> Option<String> {
    let new = after & !before;
    (new != 0).then(|| {
        format!(
            "kernel taint flags {} set (tainted {before} -> {after})",
            letters(new)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_the_kernel_prints_them() {
        assert_eq!(letters(0), "none");
        assert_eq!(letters(1 << 9), "W");
        assert_eq!(letters((1 << 5) | (1 << 14)), "BL");
        assert_eq!(letters(1 << 40), "+0x10000000000");
        assert_eq!(newly_set(512, 512), None);
        assert_eq!(
            newly_set(0, 512).as_deref(),
            Some("kernel taint flags W set (tainted 0 -> 512)")
        );
        assert!(read().is_some(), "/proc/sys/kernel/tainted is readable");
    }
}
