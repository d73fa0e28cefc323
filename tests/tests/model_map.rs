//! Model files are memory-mapped read-only (host-tools/src/load.rs): the map
//! holds the file's bytes, non-regular files are refused with one line before
//! they are opened, files that cannot be mapped are read instead, and a model
//! replaced the way the CLI writes files (rename over it) leaves a running map intact.

use std::fs;
use std::path::Path;

use microlm_tests::{converted, scratch_dir, ModelFile};

/// The /proc/self/maps line of the mapping that contains `addr`, if any.
fn mapping_of(addr: usize) -> Option<String> {
    let maps = fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .find(|line| {
            let range = line.split_whitespace().next().unwrap_or("");
            let (lo, hi) = range.split_once('-').unwrap_or(("0", "0"));
            let (lo, hi) = (usize::from_str_radix(lo, 16).unwrap_or(0), usize::from_str_radix(hi, 16).unwrap_or(0));
            (lo..hi).contains(&addr)
        })
        .map(str::to_string)
}

#[test]
fn a_model_file_is_mapped_read_only_from_the_file() {
    let path = converted("q8_0");
    let file = ModelFile::read(&path).unwrap();
    assert!(file.is_mapped());
    assert_eq!(file.bytes(), fs::read(&path).unwrap().as_slice());
    assert_eq!(file.bytes().as_ptr().align_offset(4), 0, "the runtime needs 4-byte aligned bytes");
    let line = mapping_of(file.bytes().as_ptr() as usize).expect("the bytes lie in a mapping");
    let perms = line.split_whitespace().nth(1).unwrap();
    assert!(perms.starts_with("r--p"), "read-only private map expected: {line}");
    let canonical = fs::canonicalize(&path).unwrap();
    assert!(line.ends_with(&*canonical.to_string_lossy()), "the mapping names the model file: {line}");
    let model = file.parse(false).unwrap();
    assert_eq!(model.config().vocab_size, 512);
}

#[test]
fn a_fifo_is_refused_before_it_is_opened() {
    let fifo = scratch_dir("model_map").join("model.fifo");
    let _ = fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success());
    // Opening a FIFO without a writer would block: the check comes first.
    let err = ModelFile::read(&fifo).unwrap_err().to_string();
    assert_eq!(err, format!("{} is not a regular file (the model file must be one)", fifo.display()));
    let err = ModelFile::read(Path::new("/dev/zero")).unwrap_err().to_string();
    assert_eq!(err, "/dev/zero is not a regular file (the model file must be one)");
    fs::remove_file(&fifo).unwrap();
}

#[test]
fn files_that_report_no_length_are_read_not_mapped() {
    let empty = scratch_dir("model_map").join("empty.mlm");
    fs::write(&empty, b"").unwrap();
    let file = ModelFile::read(&empty).unwrap();
    assert!(!file.is_mapped());
    assert!(file.bytes().is_empty());
    let err = format!("{:#}", file.parse(false).unwrap_err());
    assert!(err.contains("is not a valid model file"), "{err}");
    // /proc files are regular files of length 0 whose bytes only a read returns.
    let status = ModelFile::read(Path::new("/proc/self/status")).unwrap();
    assert!(!status.is_mapped());
    assert!(status.bytes().starts_with(b"Name:"));
}

#[test]
fn a_mapped_model_survives_a_rename_over_its_path() {
    let dir = scratch_dir("model_map");
    let path = dir.join("replaced.mlm");
    fs::copy(converted("f32"), &path).unwrap();
    let before = fs::read(&path).unwrap();
    let file = ModelFile::read(&path).unwrap();
    assert!(file.is_mapped());
    // The CLI's own writes go to a temporary file renamed over the target.
    microlm_cli::io::write(&path, &fs::read(converted("q8_0")).unwrap(), &[]).unwrap();
    assert_ne!(fs::read(&path).unwrap(), before);
    assert_eq!(file.bytes(), before.as_slice(), "the map keeps the old inode's bytes");
    assert!(file.parse(false).is_ok());
    fs::remove_file(&path).unwrap();
}
