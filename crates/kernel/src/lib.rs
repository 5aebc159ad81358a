//! `kernelgate-kernel`: the kernel side of the Jupyter protocol.
//!
//! Implement [`Kernel`] and hand it to [`BoundKernel::run`]: the framework binds the five
//! channels, verifies every message (refusals are counted and logged, the kernel keeps serving),
//! publishes busy/idle around every request, counts executions, keeps history, serves control
//! requests while the shell is busy, and relays input requests over stdin. The built-in kernel,
//! [`rhai::RhaiKernel`], runs the Rhai scripting language with resource limits; [`standalone`]
//! runs it as a process (`kernelgate kernel`, and the lean `kernelgate-kernel` binary).

pub mod admission;
mod answer;
mod control;
mod handler;
mod history;
mod io;
pub mod memory;
mod rejections;
pub mod rhai;
mod server;
mod shell;
pub mod standalone;
mod sweep;

pub use admission::{CurveAdmission, ZAP_DOMAIN};
pub use handler::{Completeness, Completion, Kernel, KernelInfo, MimeBundle, Outcome};
pub use io::{ExecContext, Flags, InputError};
pub use kernelgate_wire::Rejections;
pub use server::{BoundKernel, KernelError, KernelOptions};
