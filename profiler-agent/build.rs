//! Embeds the kernel programs into the agent.
//!
//! Builds `profiler-ebpf` when the eBPF toolchain is present (see `xtask/src/ebpf_build.rs`),
//! else embeds an object built earlier by `cargo xtask build-ebpf`, else embeds nothing and
//! warns: the agent then refuses to start with the command that fixes it. Set
//! `PROFILER_EBPF_OBJECT=/path/to/object` to embed a prebuilt object instead.

#[path = "../xtask/src/ebpf_build.rs"]
#[allow(dead_code, reason = "shared with xtask, which uses all of it")]
mod ebpf_build;

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace_root = manifest_dir
        .parent()
        .expect("profiler-agent lives inside the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let embedded = out_dir.join("profiler-ebpf.o");

    println!("cargo:rerun-if-env-changed=PROFILER_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=PROFILER_TOOLS_DIR");
    for dir in ["profiler-ebpf/src", "profiler-common/src"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace_root.join(dir).display()
        );
    }
    for file in [
        "profiler-ebpf/Cargo.toml",
        "profiler-ebpf/Cargo.lock",
        "profiler-ebpf/.cargo/config.toml",
        "xtask/src/ebpf_build.rs",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace_root.join(file).display()
        );
    }

    if let Some(prebuilt) = env::var_os("PROFILER_EBPF_OBJECT") {
        copy(Path::new(&prebuilt), &embedded);
        return;
    }
    match ebpf_build::find_toolchain() {
        Ok(toolchain) => match ebpf_build::build(&workspace_root, &toolchain) {
            Ok(object) => copy(&object, &embedded),
            // The toolchain is there, so a failure is a bug in the kernel programs: fail loudly.
            Err(message) => panic!("{message}"),
        },
        Err(missing) => {
            let object = ebpf_build::ebpf_object_path(&workspace_root);
            // Rebuild the agent when `cargo xtask build-ebpf` produces (or refreshes) the object.
            println!("cargo:rerun-if-changed={}", object.display());
            if object.is_file() {
                println!(
                    "cargo:warning=eBPF toolchain incomplete ({missing}); embedding the object \
                     built earlier at {}",
                    object.display()
                );
                copy(&object, &embedded);
            } else {
                println!(
                    "cargo:warning=eBPF programs NOT embedded: {missing}. The agent will refuse \
                     to record. Run `cargo xtask build-ebpf` (installs the toolchain) and rebuild."
                );
                fs::write(&embedded, b"").expect("write to OUT_DIR");
            }
        }
    }
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = fs::copy(from, to) {
        panic!(
            "cannot copy eBPF object {} to {}: {e}",
            from.display(),
            to.display()
        );
    }
}
