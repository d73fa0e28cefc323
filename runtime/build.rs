//! Generates the Unicode class table of the byte-level BPE pre-tokenizer
//! (`$OUT_DIR/unicode_classes.rs`, see `bpe.rs`), and enables the Armv7E-M DSP kernels (`cfg(microlm_dsp)`) on targets that always have the
//! DSP extension and on Armv8-M Mainline built with it, the MVE kernels (`cfg(microlm_mve)`) for Cortex-M55, and the FPU attention loops (`cfg(microlm_fpu)`) on hard-float Cortex-M; `target_feature = "dsp"` is not visible to `cfg` on stable Rust.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(microlm_dsp)");
    println!("cargo::rustc-check-cfg=cfg(microlm_fpu)");
    println!("cargo::rustc-check-cfg=cfg(microlm_fpv5)");
    println!("cargo::rustc-check-cfg=cfg(microlm_mve)");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo::rerun-if-changed=build.rs");
    write_class_runs();
    let target = std::env::var("TARGET").unwrap_or_default();
    // Cortex-M4/M7 (thumbv7em) implement SXTB16 and SMLAD in every configuration; on
    // Armv8-M Mainline (Cortex-M33/M35P/M55) the DSP extension is optional, so a board
    // enables it in its rustflags (`-C target-cpu=cortex-m33` or `-C target-feature=+dsp`).
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    // MVE requires the DSP extension (Armv8.1-M), so a Cortex-M55 has it too.
    let v8m_dsp = target.starts_with("thumbv8m.main") && (enables_dsp(&flags) || enables_mve(&flags));
    if target.starts_with("thumbv7em") || v8m_dsp {
        println!("cargo::rustc-cfg=microlm_dsp");
    }
    // Cortex-M55 (Armv8.1-M with MVE): the board sets `-C target-cpu=cortex-m55` (or
    // `+mve` in `-C target-feature`), which only the rustflags show on stable Rust.
    if target.starts_with("thumbv8m.main") && enables_mve(&flags) {
        println!("cargo::rustc-cfg=microlm_mve");
        // MVE float instructions flush subnormals; compiled loops must not use them.
        let split: Vec<&str> = flags.split('\x1f').collect();
        let has = |opt: &str| split.iter().any(|a| *a == opt || a.strip_prefix("-C") == Some(opt));
        if !(has("no-vectorize-loops") && has("no-vectorize-slp")) {
            println!(
                "cargo::warning=microlm on MVE: build with `-C no-vectorize-loops -C no-vectorize-slp`, else LLVM may vectorize f32 loops into MVE float instructions, which flush subnormals (results could then differ from other targets')"
            );
        }
    }
    // Hard-float Cortex-M4F/M7/M33 (FPv4/FPv5): the VLDM attention loops of kernels/vfp.rs.
    if (target.starts_with("thumbv7em") || target.starts_with("thumbv8m.main")) && target.ends_with("eabihf") {
        println!("cargo::rustc-cfg=microlm_fpu");
    }
    // Armv8-M's FPU (FPv5: Cortex-M33/M55) adds VMAXNM, which the score loop's running maximum uses.
    if target.starts_with("thumbv8m.main") && target.ends_with("eabihf") {
        println!("cargo::rustc-cfg=microlm_fpv5");
    }
}

/// Whether rustflags (`CARGO_ENCODED_RUSTFLAGS`: separated by 0x1f) turn on an
/// Armv8-M extension: a `-C target-cpu` among `cpus`, or `+F` for an `F` in
/// `features` in a `-C target-feature` list (`-F` turns it off again; the last
/// flag wins), in either the split (`-C x`) or the joined (`-Cx`) form.
fn rustflags_enable(flags: &str, cpus: &[&str], features: &[&str]) -> bool {
    let args: Vec<&str> = flags.split('\x1f').collect();
    let values = args.iter().enumerate().filter_map(|(i, a)| match *a {
        "-C" | "--codegen" => args.get(i + 1).copied(),
        a => a.strip_prefix("-C"),
    });
    let mut on = false;
    for v in values {
        if let Some(cpu) = v.strip_prefix("target-cpu=") {
            on = cpus.contains(&cpu);
        } else if let Some(list) = v.strip_prefix("target-feature=") {
            for f in list.split(',') {
                if f.strip_prefix('+').is_some_and(|n| features.contains(&n)) {
                    on = true;
                } else if f.strip_prefix('-').is_some_and(|n| features.contains(&n)) {
                    on = false;
                }
            }
        }
    }
    on
}

/// The DSP extension: Cortex-M33/M35P, or `+dsp`.
fn enables_dsp(flags: &str) -> bool {
    rustflags_enable(flags, &["cortex-m33", "cortex-m35p"], &["dsp"])
}

/// MVE (Helium): Cortex-M55/M85, or `+mve` / `+mve.fp`.
fn enables_mve(flags: &str) -> bool {
    rustflags_enable(flags, &["cortex-m55", "cortex-m85"], &["mve", "mve.fp"])
}

/// Writes the class runs of the GPT-2 pre-tokenizer: every code point where its
/// class changes (0 other, 1 `\p{L}` = Lu Ll Lt Lm Lo, 2 `\p{N}` = Nd Nl No), from
/// the `unicode-general-category` crate's data; a run lasts until the next one,
/// surrogates and unassigned code points are "other". About 1,600 runs, stored as
///
/// - `CLASS_STREAM`: one byte per run, `delta << 2 | class` with `delta` (1..=63)
///   the distance from the previous run's start, or for a larger distance
///   `class` (a byte below 4) then the start in 3 little-endian bytes;
/// - `CLASS_STARTS` and `CLASS_OFFSETS`: the start of every 32nd run and the
///   offset of its byte in the stream, to binary-search before decoding.
///
/// About 2.3 KB of flash, against 4.8 KB as 3-byte runs and the crate's 45 KB
/// block table.
fn write_class_runs() {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    let class = |cp: u32| -> u32 {
        let Some(c) = char::from_u32(cp) else { return 0 };
        match get_general_category(c) {
            G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter => 1,
            G::DecimalNumber | G::LetterNumber | G::OtherNumber => 2,
            _ => 0,
        }
    };
    let mut runs = Vec::new();
    let mut last = u32::MAX;
    for cp in 0..=0x10FFFFu32 {
        let c = class(cp);
        if c != last {
            runs.push((cp, c));
            last = c;
        }
    }
    const EVERY: usize = 32;
    let (mut stream, mut starts, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
    let mut prev = 0u32;
    for (i, &(start, c)) in runs.iter().enumerate() {
        if i % EVERY == 0 {
            starts.push(start);
            offsets.push(u16::try_from(stream.len()).expect("class stream under 64 KiB"));
        }
        let delta = start - prev;
        if (1..64).contains(&delta) {
            stream.push((delta << 2 | c) as u8);
        } else {
            stream.push(c as u8);
            stream.extend_from_slice(&start.to_le_bytes()[..3]);
        }
        prev = start;
    }
    let list = |v: Vec<String>| v.chunks(16).map(|c| c.join(", ") + ",\n").collect::<String>();
    let code = format!(
        "// Generated by build.rs from unicode-general-category {:?}: {} runs.\n\
         /// The class runs, one byte each (`delta << 2 | class`), or a class byte and a 3-byte start.\n\
         static CLASS_STREAM: [u8; {}] = [\n{}];\n\
         /// The start of every {EVERY}th run.\n\
         static CLASS_STARTS: [u32; {}] = [\n{}];\n\
         /// The offset in `CLASS_STREAM` of every {EVERY}th run.\n\
         static CLASS_OFFSETS: [u16; {}] = [\n{}];\n",
        unicode_general_category::UNICODE_VERSION,
        runs.len(),
        stream.len(),
        list(stream.iter().map(|b| format!("{b:#04x}")).collect()),
        starts.len(),
        list(starts.iter().map(|s| format!("{s:#x}")).collect()),
        offsets.len(),
        list(offsets.iter().map(|o| o.to_string()).collect()),
    );
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("unicode_classes.rs");
    std::fs::write(out, code).expect("write unicode_classes.rs");
}
