//! Firmware builds whose bytes do not depend on where the checkout and the
//! cargo home are.
//!
//! A board crate is its own workspace, so cargo hands rustc the runtime's and
//! the registry crates' sources by absolute path, and every panic location in
//! `.rodata` carries that path: the same commit built in `/home/a/microlm` and
//! in `/ci/microlm` differs in flash size, data layout and even instruction
//! counts. [`cargo_args`] remaps both prefixes (rustc's `--remap-path-prefix`)
//! to fixed names, through `target.'cfg(all())'.rustflags`, which cargo joins
//! with the board's own `target.<triple>.rustflags` instead of replacing them
//! (as `RUSTFLAGS` would).

use std::path::{Component, Path, PathBuf};

/// What the checkout's path becomes in a firmware.
pub const CHECKOUT: &str = "/microlm";
/// What the cargo home's path becomes in a firmware.
pub const CARGO_HOME: &str = "/cargo";

/// `cargo build` arguments that remap `checkout` and the cargo home
/// (`$CARGO_HOME`, else `$HOME/.cargo`) in every crate the build compiles.
pub fn cargo_args(checkout: &Path) -> Vec<String> {
    let mut maps = Vec::new();
    for (from, to) in prefixes(checkout).into_iter().zip([CHECKOUT, CHECKOUT, CARGO_HOME, CARGO_HOME]) {
        if let Some(from) = from {
            let flag = format!("--remap-path-prefix={}={to}", from.display());
            if !maps.contains(&flag) {
                maps.push(flag);
            }
        }
    }
    let list: Vec<String> = maps.iter().map(|m| toml_string(m)).collect();
    vec!["--config".into(), format!("target.'cfg(all())'.rustflags=[{}]", list.join(", "))]
}

/// The checkout as cargo spells it (lexically normalized) and resolved, then the cargo home both ways.
fn prefixes(checkout: &Path) -> [Option<PathBuf>; 4] {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let both = |p: Option<&Path>| {
        let p = p.map(normalize);
        let real = p.as_deref().and_then(|p| p.canonicalize().ok());
        [p, real]
    };
    let [a, b] = both(Some(checkout));
    let [c, d] = both(home.as_deref());
    [a, b, c, d]
}

/// `a/b/../c` as `a/c`, without touching the file system (what cargo does to a dependency's path).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkout_is_remapped_once_and_quoted() {
        let args = cargo_args(Path::new("/no/such/dir/x/../checkout"));
        assert_eq!(args[0], "--config");
        assert!(args[1]
            .starts_with("target.'cfg(all())'.rustflags=[\"--remap-path-prefix=/no/such/dir/checkout=/microlm\""));
        assert_eq!(args[1].matches("=/microlm").count(), 1, "{}", args[1]);
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
