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
    let mut flags = std::env::var("CXXFLAGS").unwrap_or_default();
    flags.push_str(" -w");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        // What libzmq's own configure finds on Linux and zeromq-src does not define:
        // - eventfd for the signalers that wake sockets (one 8-byte write/read instead of a
        //   unix-socket round trip per wake-up, on every message that crosses a thread);
        // - SOCK_CLOEXEC / accept4 / EFD_CLOEXEC: descriptors are close-on-exec from birth,
        //   not set by a later fcntl that a concurrent spawn of a kernel can race (the child
        //   would inherit the host's sockets to other kernels);
        // - clock_gettime(CLOCK_MONOTONIC) for timers, not the wall clock (gettimeofday).
        flags.push_str(
            " -DZMQ_HAVE_EVENTFD=1 -DZMQ_HAVE_EVENTFD_CLOEXEC=1 -DZMQ_HAVE_SOCK_CLOEXEC=1 \
             -DHAVE_ACCEPT4=1 -DHAVE_CLOCK_GETTIME=1",
        );
    }
    std::env::set_var("CXXFLAGS", flags);
    // libstdc++ linked statically: a binary then maps only the few parts libzmq uses, instead
    // of all of libstdc++.so, whose relocation at start-up alone keeps over a megabyte of it
    // resident in every kernel process. (cc emits it unbundled; the final link takes it from
    // the toolchain's own library directory.)
    std::env::set_var("CXXSTDLIB_STATIC", "1");
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .build();
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
