//! Compiles the C eBPF programs in bpf/ into one BPF object in OUT_DIR.
//!
//! The object keeps its BTF (`-g`): aya needs it for CO-RE relocations and for
//! the map definitions. Nothing here reads the build machine's kernel.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCES: &[&str] = &["bpf/fathom.bpf.c", "bpf/fathom_core.h", "bpf/fathom_events.h"];

fn main() {
    for source in SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=FATHOM_BPF_CLANG");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("fathom.bpf.o");
    let clang = env::var("FATHOM_BPF_CLANG").unwrap_or_else(|_| "clang".to_string());
    // The uprobe programs read registers by the target's calling convention.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target_arch = match arch.as_str() {
        "x86_64" => "-D__TARGET_ARCH_x86",
        other => panic!("the eBPF programs support x86_64 only, not {other:?}"),
    };

    let output = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-mcpu=v3", "-Wall", "-Werror"])
        .arg(target_arch)
        .arg("-Ibpf")
        .arg("-c")
        .arg("bpf/fathom.bpf.c")
        .arg("-o")
        .arg(&object)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) => panic!(
            "cannot run `{clang}` to compile the eBPF programs: {err}\n\
             install clang and libbpf-dev (apt-get install clang libbpf-dev), \
             or point FATHOM_BPF_CLANG at a clang that targets bpf"
        ),
    };
    if !output.status.success() {
        panic!(
            "compiling bpf/fathom.bpf.c failed ({}):\n{}\n\
             (the libbpf headers come from libbpf-dev)",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
