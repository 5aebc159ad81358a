//! One module per subcommand.

pub mod kernel;
pub mod kernelspec;
pub mod serve;
