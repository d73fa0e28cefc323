//! Enables the Armv7E-M DSP kernels (`cfg(microlm_dsp)`) on targets that always have the
//! DSP extension; `target_feature = "dsp"` is not visible to `cfg` on stable Rust.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(microlm_dsp)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    // Cortex-M4/M7 (thumbv7em) implement SXTB16 and SMLAD in every configuration.
    if target.starts_with("thumbv7em") {
        println!("cargo::rustc-cfg=microlm_dsp");
    }
}
