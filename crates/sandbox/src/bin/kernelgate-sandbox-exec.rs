//! `kernelgate-sandbox-exec [sandbox-exec] -- PROGRAM ARGS...`: the small launcher through which
//! the host starts sandboxed kernels (see `kernelgate_sandbox::launcher`). The same thing as
//! `kernelgate sandbox-exec`, in a binary that starts in a fraction of the time: it runs once
//! for every kernel launch.

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args
        .first()
        .is_some_and(|a| a == kernelgate_sandbox::launcher::SUBCOMMAND)
    {
        args.remove(0);
    }
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    let Some((program, rest)) = args.split_first() else {
        eprintln!(
            "usage: kernelgate-sandbox-exec -- PROGRAM ARGS... (internal to kernelgate serve)"
        );
        return ExitCode::from(2);
    };
    let err = kernelgate_sandbox::launcher::confine_and_exec(program, rest);
    eprintln!(
        "kernelgate-sandbox-exec {}: {err}",
        program.to_string_lossy()
    );
    ExitCode::from(126)
}
