// Builds the fault-guarded memory access shim (see src/exec/fault.c for why it is C).
fn main() {
    println!("cargo:rerun-if-changed=src/exec/fault.c");
    // The corpus and the named targets are built into the binary
    // (case::corpus, target::fs): a case added, removed or edited rebuilds it.
    println!("cargo:rerun-if-changed=../cases");
    println!("cargo:rerun-if-changed=../ci/targets.json");
    cc::Build::new()
        .file("src/exec/fault.c")
        .flag_if_supported("-fno-strict-aliasing")
        .opt_level(2)
        .compile("mmapconf_fault");
}
