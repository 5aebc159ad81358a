//! Typed content for the standard message types of the Jupyter messaging spec 5.4.
//!
//! Each struct keeps fields it does not know in `extra`, so decoding then encoding loses nothing.
//! Unknown message types stay as raw JSON in [`crate::Message::content`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields a struct does not name, kept in their original order.
pub type Extra = Map<String, Value>;

/// MIME bundle: mime type -> data.
pub type MimeBundle = Map<String, Value>;

/// Reply status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Success.
    #[default]
    Ok,
    /// The request raised an error.
    Error,
    /// The request was aborted (for example after an earlier error with stop_on_error).
    Aborted,
}

macro_rules! content {
    ($(#[$meta:meta])* $name:ident = $msg_type:literal { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Fields not named above.
            #[serde(flatten)]
            pub extra: Extra,
        }
        impl $name {
            /// The `msg_type` this content belongs to.
            pub const MSG_TYPE: &'static str = $msg_type;
        }
    };
}

content!(
    /// `kernel_info_request` (empty).
    KernelInfoRequest = "kernel_info_request" {}
);
content!(
    /// `kernel_info_reply`.
    KernelInfoReply = "kernel_info_reply" {
        /// ok or error.
        status: Status,
        /// Protocol version the kernel speaks.
        protocol_version: String,
        /// Implementation name.
        implementation: String,
        /// Implementation version.
        implementation_version: String,
        /// Language description.
        language_info: LanguageInfo,
        /// Startup banner.
        #[serde(default)] banner: String,
        /// Whether the kernel supports the debugger.
        #[serde(default)] debugger: bool,
        /// Help links.
        #[serde(default)] help_links: Vec<HelpLink>,
    }
);

/// `language_info` of a kernel_info_reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LanguageInfo {
    /// Language name.
    pub name: String,
    /// Language version.
    #[serde(default)]
    pub version: String,
    /// MIME type of source files.
    #[serde(default)]
    pub mimetype: String,
    /// File extension, with the dot.
    #[serde(default)]
    pub file_extension: String,
    /// Pygments lexer name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pygments_lexer: Option<String>,
    /// CodeMirror mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codemirror_mode: Option<Value>,
    /// nbconvert exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbconvert_exporter: Option<String>,
    /// Fields not named above.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A help link of a kernel_info_reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HelpLink {
    /// Link text.
    pub text: String,
    /// URL.
    pub url: String,
}

content!(
    /// `execute_request`.
    ExecuteRequest = "execute_request" {
        /// Source to execute.
        code: String,
        /// Don't broadcast or count this execution.
        #[serde(default)] silent: bool,
        /// Record in history.
        #[serde(default = "yes")] store_history: bool,
        /// Expressions to evaluate after execution.
        #[serde(default)] user_expressions: Map<String, Value>,
        /// Whether the kernel may send input_request.
        #[serde(default = "yes")] allow_stdin: bool,
        /// Abort queued requests on error.
        #[serde(default = "yes")] stop_on_error: bool,
    }
);

fn yes() -> bool {
    true
}

content!(
    /// `execute_reply`.
    ExecuteReply = "execute_reply" {
        /// ok, error or aborted.
        status: Status,
        /// The execution counter.
        execution_count: Option<i64>,
        /// Results of user_expressions (ok replies).
        #[serde(default, skip_serializing_if = "Option::is_none")] user_expressions: Option<Map<String, Value>>,
        /// Payloads (deprecated but still sent, usually empty).
        #[serde(default, skip_serializing_if = "Option::is_none")] payload: Option<Vec<Value>>,
        /// Error name (error replies).
        #[serde(default, skip_serializing_if = "Option::is_none")] ename: Option<String>,
        /// Error value (error replies).
        #[serde(default, skip_serializing_if = "Option::is_none")] evalue: Option<String>,
        /// Traceback lines (error replies).
        #[serde(default, skip_serializing_if = "Option::is_none")] traceback: Option<Vec<String>>,
    }
);
content!(
    /// `inspect_request`.
    InspectRequest = "inspect_request" {
        /// The code context.
        code: String,
        /// Cursor offset in unicode code points.
        cursor_pos: usize,
        /// 0 or 1.
        #[serde(default)] detail_level: u8,
    }
);
content!(
    /// `inspect_reply`.
    InspectReply = "inspect_reply" {
        /// ok or error.
        status: Status,
        /// Whether something was found.
        found: bool,
        /// MIME bundle.
        data: MimeBundle,
        /// Metadata of the bundle.
        metadata: Map<String, Value>,
    }
);
content!(
    /// `complete_request`.
    CompleteRequest = "complete_request" {
        /// The code context.
        code: String,
        /// Cursor offset in unicode code points.
        cursor_pos: usize,
    }
);
content!(
    /// `complete_reply`.
    CompleteReply = "complete_reply" {
        /// ok or error.
        status: Status,
        /// Candidate completions.
        matches: Vec<String>,
        /// Start of the text to replace.
        cursor_start: usize,
        /// End of the text to replace.
        cursor_end: usize,
        /// Extra information.
        metadata: Map<String, Value>,
    }
);
content!(
    /// `is_complete_request`.
    IsCompleteRequest = "is_complete_request" {
        /// The code entered so far.
        code: String,
    }
);
content!(
    /// `is_complete_reply`.
    IsCompleteReply = "is_complete_reply" {
        /// complete, incomplete, invalid or unknown.
        status: String,
        /// Indentation for the next line (incomplete only).
        #[serde(default, skip_serializing_if = "Option::is_none")] indent: Option<String>,
    }
);
content!(
    /// `history_request`.
    HistoryRequest = "history_request" {
        /// Include output.
        #[serde(default)] output: bool,
        /// Return raw input.
        #[serde(default)] raw: bool,
        /// range, tail or search.
        hist_access_type: String,
        /// Session number (range).
        #[serde(default)] session: Option<i64>,
        /// Start line (range).
        #[serde(default)] start: Option<i64>,
        /// Stop line (range).
        #[serde(default)] stop: Option<i64>,
        /// Number of entries (tail, search).
        #[serde(default)] n: Option<i64>,
        /// Glob pattern (search).
        #[serde(default)] pattern: Option<String>,
        /// Unique results only (search).
        #[serde(default)] unique: Option<bool>,
    }
);
content!(
    /// `history_reply`.
    HistoryReply = "history_reply" {
        /// ok or error.
        status: Status,
        /// (session, line_number, input) or (session, line_number, (input, output)) entries.
        history: Vec<Value>,
    }
);
content!(
    /// `comm_open`.
    CommOpen = "comm_open" {
        /// Comm id.
        comm_id: String,
        /// Target name.
        target_name: String,
        /// Payload.
        #[serde(default)] data: Map<String, Value>,
    }
);
content!(
    /// `comm_msg`.
    CommMsg = "comm_msg" {
        /// Comm id.
        comm_id: String,
        /// Payload.
        #[serde(default)] data: Map<String, Value>,
    }
);
content!(
    /// `comm_close`.
    CommClose = "comm_close" {
        /// Comm id.
        comm_id: String,
        /// Payload.
        #[serde(default)] data: Map<String, Value>,
    }
);
content!(
    /// `comm_info_request`.
    CommInfoRequest = "comm_info_request" {
        /// Only comms of this target.
        #[serde(default, skip_serializing_if = "Option::is_none")] target_name: Option<String>,
    }
);
content!(
    /// `comm_info_reply`.
    CommInfoReply = "comm_info_reply" {
        /// ok or error.
        status: Status,
        /// comm_id -> {target_name}.
        comms: Map<String, Value>,
    }
);
content!(
    /// `shutdown_request` (control).
    ShutdownRequest = "shutdown_request" {
        /// Whether a restart follows.
        #[serde(default)] restart: bool,
    }
);
content!(
    /// `shutdown_reply`.
    ShutdownReply = "shutdown_reply" {
        /// ok or error.
        status: Status,
        /// Echo of the request.
        restart: bool,
    }
);
content!(
    /// `interrupt_request` (control).
    InterruptRequest = "interrupt_request" {}
);
content!(
    /// `interrupt_reply`.
    InterruptReply = "interrupt_reply" {
        /// ok or error.
        status: Status,
    }
);
content!(
    /// `status` (iopub).
    KernelStatus = "status" {
        /// busy, idle, starting (also restarting, dead from hosts).
        execution_state: String,
    }
);
content!(
    /// `stream` (iopub).
    Stream = "stream" {
        /// stdout or stderr.
        name: String,
        /// The text.
        text: String,
    }
);
content!(
    /// `display_data` (iopub).
    DisplayData = "display_data" {
        /// MIME bundle.
        data: MimeBundle,
        /// Metadata.
        #[serde(default)] metadata: Map<String, Value>,
        /// Transient data (display_id).
        #[serde(default, skip_serializing_if = "Map::is_empty")] transient: Map<String, Value>,
    }
);
content!(
    /// `update_display_data` (iopub).
    UpdateDisplayData = "update_display_data" {
        /// MIME bundle.
        data: MimeBundle,
        /// Metadata.
        #[serde(default)] metadata: Map<String, Value>,
        /// Transient data (display_id, required here).
        #[serde(default)] transient: Map<String, Value>,
    }
);
content!(
    /// `execute_input` (iopub).
    ExecuteInput = "execute_input" {
        /// The code being executed.
        code: String,
        /// The execution counter.
        execution_count: i64,
    }
);
content!(
    /// `execute_result` (iopub).
    ExecuteResult = "execute_result" {
        /// The execution counter.
        execution_count: i64,
        /// MIME bundle.
        data: MimeBundle,
        /// Metadata.
        #[serde(default)] metadata: Map<String, Value>,
    }
);
content!(
    /// `error` (iopub).
    ErrorContent = "error" {
        /// Error name.
        ename: String,
        /// Error value.
        evalue: String,
        /// Traceback lines.
        traceback: Vec<String>,
    }
);
content!(
    /// `clear_output` (iopub).
    ClearOutput = "clear_output" {
        /// Wait until new output arrives before clearing.
        #[serde(default)] wait: bool,
    }
);
content!(
    /// `input_request` (stdin, kernel to client).
    InputRequest = "input_request" {
        /// The prompt.
        prompt: String,
        /// Whether the input is a password.
        #[serde(default)] password: bool,
    }
);
content!(
    /// `input_reply` (stdin, client to kernel).
    InputReply = "input_reply" {
        /// The text typed.
        value: String,
    }
);

/// The channel a standard message type travels on, or `None` for an unknown type.
pub fn channel_of(msg_type: &str) -> Option<crate::Channel> {
    use crate::Channel::*;
    Some(match msg_type {
        "execute_request"
        | "execute_reply"
        | "inspect_request"
        | "inspect_reply"
        | "complete_request"
        | "complete_reply"
        | "is_complete_request"
        | "is_complete_reply"
        | "history_request"
        | "history_reply"
        | "comm_info_request"
        | "comm_info_reply"
        | "kernel_info_request"
        | "kernel_info_reply" => Shell,
        "shutdown_request" | "shutdown_reply" | "interrupt_request" | "interrupt_reply"
        | "debug_request" | "debug_reply" => Control,
        "input_request" | "input_reply" => Stdin,
        "status"
        | "stream"
        | "display_data"
        | "update_display_data"
        | "execute_input"
        | "execute_result"
        | "error"
        | "clear_output"
        | "debug_event" => IoPub,
        "comm_open" | "comm_msg" | "comm_close" => Shell,
        _ => return None,
    })
}
