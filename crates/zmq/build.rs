//! Builds libzmq 4.3.5 from vendored source (zeromq-src) with CURVE backed by the
//! libsodium that `libsodium-sys-stable` builds from its bundled, signature-checked tarball.
//! No system package is needed.

fn main() -> Result<(), String> {
    // `libsodium-sys-stable` (links = "sodium") exports these to direct dependents.
    let include = std::env::var("DEP_SODIUM_INCLUDE").map_err(|_| {
        "DEP_SODIUM_INCLUDE not set: libsodium-sys-stable did not report its include dir \
         (unset SODIUM_LIB_DIR / SODIUM_USE_PKG_CONFIG to build libsodium from source)"
            .to_string()
    })?;
    let lib = std::env::var("DEP_SODIUM_LIB")
        .map_err(|_| "DEP_SODIUM_LIB not set by libsodium-sys-stable".to_string())?;
    // libzmq's C++ warnings would otherwise flood every workspace build (cc forwards them as
    // cargo warnings); they are upstream's, not actionable here.
    let flags = std::env::var("CXXFLAGS").unwrap_or_default();
    std::env::set_var("CXXFLAGS", format!("{flags} -w"));
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
