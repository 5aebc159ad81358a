//! kernel.json: parse, substitute argv placeholders, serialize and parse again.
#![no_main]

use kernelgate_wire::kernelspec::{is_valid_name, ArgvVars};
use kernelgate_wire::KernelSpec;
use libfuzzer_sys::fuzz_target;

const PLACEHOLDERS: [&str; 3] = ["{connection_file}", "{resource_dir}", "{prefix}"];

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = KernelSpec::from_json(data) else {
        return;
    };
    let vars = ArgvVars {
        connection_file: "/run/user/1000/jupyter/kernel-1.json",
        resource_dir: "/usr/share/jupyter/kernels/python3",
        prefix: "/usr",
    };
    let command = spec.command(&vars);
    assert_eq!(command.len(), spec.argv.len());
    for (arg, out) in spec.argv.iter().zip(&command) {
        if !PLACEHOLDERS.iter().any(|p| arg.contains(p)) {
            assert_eq!(
                arg, out,
                "an argument without known placeholders was changed"
            );
        }
        // The values hold no braces, so every placeholder must be gone.
        assert!(
            !PLACEHOLDERS.iter().any(|p| out.contains(p)),
            "a placeholder survived: {out:?}"
        );
    }
    let _ = spec.supports_curve();
    let _ = is_valid_name(&spec.display_name);
    let written = match serde_json::to_vec(&spec) {
        Ok(w) => w,
        Err(e) => panic!("kernelspec does not serialize: {e}"),
    };
    match KernelSpec::from_json(&written) {
        Ok(again) => assert_eq!(again, spec, "kernel.json round trip changed it"),
        Err(e) => panic!("serialized kernelspec does not parse: {e}"),
    }
});
