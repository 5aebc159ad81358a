//! The trait a kernel written in Rust implements. The framework does the protocol around it:
//! busy/idle status, execute_input, execution counting, replies, history.

use serde_json::{Map, Value};

use crate::io::ExecContext;
use kernelgate_wire::content::LanguageInfo;

/// What a kernel tells clients about itself (kernel_info_reply).
#[derive(Debug, Clone, Default)]
pub struct KernelInfo {
    /// Implementation name, e.g. `kernelgate-rhai`.
    pub implementation: String,
    /// Implementation version.
    pub implementation_version: String,
    /// Language description.
    pub language_info: LanguageInfo,
    /// Banner shown by consoles.
    pub banner: String,
}

/// A MIME bundle (`text/plain` -> "...").
pub type MimeBundle = Map<String, Value>;

/// The outcome of running one cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success, with the value of the last expression if it has one to show.
    Ok(Option<MimeBundle>),
    /// The code raised an error.
    Error {
        /// Error name.
        ename: String,
        /// Error value (message).
        evalue: String,
        /// Traceback lines, shown to the user.
        traceback: Vec<String>,
    },
}

/// Completion candidates for a cursor position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    /// Candidate texts.
    pub matches: Vec<String>,
    /// Start of the text to replace, in unicode code points.
    pub cursor_start: usize,
    /// End of the text to replace, in unicode code points.
    pub cursor_end: usize,
}

/// Whether code typed so far can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// Ready to execute.
    Complete,
    /// Needs more lines; the indent to suggest.
    Incomplete(String),
    /// Cannot become valid by adding lines.
    Invalid,
    /// The kernel cannot tell.
    Unknown,
}

/// A kernel implemented in Rust. Methods run on the shell thread, one request at a time.
pub trait Kernel: Send {
    /// Static description for kernel_info_reply.
    fn info(&self) -> KernelInfo;

    /// Runs `code`. Output goes through `ctx`; check `ctx.interrupted()` in long work.
    fn execute(&mut self, code: &str, ctx: &ExecContext) -> Outcome;

    /// Completion candidates at `cursor_pos` (unicode code points).
    fn complete(&mut self, _code: &str, cursor_pos: usize) -> Completion {
        Completion {
            matches: Vec::new(),
            cursor_start: cursor_pos,
            cursor_end: cursor_pos,
        }
    }

    /// Help for the name at `cursor_pos`, as a MIME bundle, if any.
    fn inspect(
        &mut self,
        _code: &str,
        _cursor_pos: usize,
        _detail_level: u8,
    ) -> Option<MimeBundle> {
        None
    }

    /// Whether `code` is ready to run.
    fn is_complete(&mut self, _code: &str) -> Completeness {
        Completeness::Unknown
    }

    /// Called once before the kernel stops (or restarts in place).
    fn shutdown(&mut self, _restart: bool) {}
}
