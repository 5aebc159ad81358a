//! One module per subcommand.

pub mod console;
pub mod exec;
pub mod exec_remote;
pub mod kernel;
pub mod kernelspec;
pub mod sandbox;
pub mod serve;
