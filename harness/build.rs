// Builds the fault-guarded memory access shim (see src/exec/fault.c for why it is C).
fn main() {
    println!("cargo:rerun-if-changed=src/exec/fault.c");
    cc::Build::new()
        .file("src/exec/fault.c")
        .flag_if_supported("-fno-strict-aliasing")
        .opt_level(2)
        .compile("mmapconf_fault");
}
