//! One module per subcommand.

pub mod console;
pub mod exec;
pub mod kernel;
pub mod kernelspec;
pub mod sandbox;
pub mod serve;
