//! Enables the Armv7E-M DSP kernels (`cfg(microlm_dsp)`) on targets that always have the
//! DSP extension, and the FPU attention loops (`cfg(microlm_fpu)`) on hard-float Cortex-M; `target_feature = "dsp"` is not visible to `cfg` on stable Rust.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(microlm_dsp)");
    println!("cargo::rustc-check-cfg=cfg(microlm_fpu)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    // Cortex-M4/M7 (thumbv7em) implement SXTB16 and SMLAD in every configuration.
    if target.starts_with("thumbv7em") {
        println!("cargo::rustc-cfg=microlm_dsp");
    }
    // Hard-float Cortex-M4F/M7/M33 (FPv4/FPv5): the VLDM attention loops of kernels/vfp.rs.
    if (target.starts_with("thumbv7em") || target.starts_with("thumbv8m.main")) && target.ends_with("eabihf") {
        println!("cargo::rustc-cfg=microlm_fpu");
    }
}
