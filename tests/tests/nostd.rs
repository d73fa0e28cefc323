//! The runtime builds for bare-metal targets with neither `std` nor `alloc`.

use std::process::Command;

use microlm_tests::{profile_dir, root};

fn build_for(target: &str) {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--release", "-p", "microlm", "--target", target])
        // A separate target dir, so the outer cargo's build lock is not contended.
        .env("CARGO_TARGET_DIR", profile_dir().join("nostd-target"))
        .status()
        .expect("run cargo");
    assert!(status.success(), "microlm does not build for {target}");
}

#[test]
fn builds_for_cortex_m4f() {
    build_for("thumbv7em-none-eabihf");
}

#[test]
fn builds_for_cortex_m0() {
    build_for("thumbv6m-none-eabi");
}

#[test]
fn runtime_uses_alloc_only_in_std_gated_modules() {
    // `alloc` would link on these targets too, so check the source: only modules
    // that lib.rs declares under `#[cfg(feature = "std")]` may name it.
    let lib = std::fs::read_to_string(root().join("runtime/src/lib.rs")).unwrap();
    assert!(lib.contains("#![no_std]"));
    let gated: Vec<String> = lib
        .split("#[cfg(feature = \"std\")]\npub mod ")
        .skip(1)
        .map(|rest| format!("{}.rs", &rest[..rest.find(';').unwrap()]))
        .collect();
    assert!(gated.iter().any(|g| g == "write.rs"), "the writer must be std-gated");
    for entry in walk(&root().join("runtime/src")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        if text.contains("extern crate alloc") || text.contains("alloc::") {
            let name = entry.file_name().unwrap().to_string_lossy().into_owned();
            assert!(gated.contains(&name), "{} uses alloc but is not std-gated", entry.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
    files
}
