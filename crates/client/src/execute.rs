//! Options, output handling and results of `execute_request`.

use std::time::Duration;

use kernelgate_wire::content::{ExecuteReply, ExecuteRequest, MimeBundle};
use kernelgate_wire::Message;
use serde_json::{Map, Value};

/// The flags of an `execute_request`, plus an optional per-call deadline.
#[derive(Debug, Clone)]
pub struct ExecuteOptions {
    /// Don't broadcast output or count this execution (default false).
    pub silent: bool,
    /// Record the code in the history (default true).
    pub store_history: bool,
    /// Let the kernel ask for input through [`OutputHandler::on_input_request`] (default false:
    /// code calling `input()` then gets an error from the kernel instead of waiting).
    pub allow_stdin: bool,
    /// Abort queued requests if this one fails (default true).
    pub stop_on_error: bool,
    /// Expressions evaluated after the code; results come back in the reply.
    pub user_expressions: Map<String, Value>,
    /// Overall deadline for the reply and the final `idle` status; `None` = the client's default.
    pub timeout: Option<Duration>,
    /// Outputs kept in [`ExecuteOutcome::outputs`] up to about this many bytes (default
    /// 256 MiB); later ones still reach the handler but are only counted, so a cell printing
    /// for hours cannot exhaust the client's memory. 0 keeps none: for handlers that print.
    pub keep_output_bytes: usize,
}

/// [`ExecuteOptions::keep_output_bytes`] by default.
pub const KEEP_OUTPUT_BYTES: usize = 256 << 20;

impl Default for ExecuteOptions {
    fn default() -> Self {
        ExecuteOptions {
            silent: false,
            store_history: true,
            allow_stdin: false,
            stop_on_error: true,
            user_expressions: Map::new(),
            timeout: None,
            keep_output_bytes: KEEP_OUTPUT_BYTES,
        }
    }
}

impl ExecuteOptions {
    pub(crate) fn request(&self, code: &str) -> ExecuteRequest {
        ExecuteRequest {
            code: code.to_owned(),
            silent: self.silent,
            store_history: self.store_history,
            user_expressions: self.user_expressions.clone(),
            allow_stdin: self.allow_stdin,
            stop_on_error: self.stop_on_error,
            extra: Map::new(),
        }
    }
}

/// Receives what an execution produces, as it arrives.
pub trait OutputHandler {
    /// Each IOPub message whose parent is this request, other than `status`: `stream`,
    /// `display_data`, `update_display_data`, `execute_result`, `error`, `clear_output`,
    /// `execute_input`, and comm messages the code opened or sent.
    fn on_iopub(&mut self, msg: &Message) {
        let _ = msg;
    }

    /// An `input_request` from the kernel; the returned text is sent as the `input_reply`.
    /// `None` answers with an empty string (the kernel would otherwise wait forever).
    fn on_input_request(&mut self, prompt: &str, password: bool) -> Option<String> {
        let _ = (prompt, password);
        None
    }
}

/// Ignores outputs (they are still collected in [`ExecuteOutcome::outputs`]).
impl OutputHandler for () {}

/// The result of an execution: the reply and every IOPub message for it, in order.
#[derive(Debug, Clone)]
pub struct ExecuteOutcome {
    /// The typed `execute_reply` content (its `status` may be `error`).
    pub reply: ExecuteReply,
    /// The whole reply message (metadata, header).
    pub reply_message: Message,
    /// IOPub messages for this request except `status`, in arrival order, up to
    /// [`ExecuteOptions::keep_output_bytes`].
    pub outputs: Vec<Message>,
    /// Outputs the handler saw that were not kept, being over `keep_output_bytes`.
    pub outputs_dropped: usize,
}

/// The outputs of one execution, kept up to a byte budget.
#[derive(Debug)]
pub(crate) struct KeptOutputs {
    kept: Vec<Message>,
    dropped: usize,
    room: usize,
}

impl KeptOutputs {
    pub(crate) fn new(budget: usize) -> KeptOutputs {
        KeptOutputs {
            kept: Vec::new(),
            dropped: 0,
            room: budget,
        }
    }

    pub(crate) fn push(&mut self, msg: Message) {
        let size = approx_size(&msg);
        if size <= self.room {
            self.room -= size;
            self.kept.push(msg);
        } else {
            // Once one is dropped, later ones are too: what is kept stays a prefix, in order.
            self.room = 0;
            self.dropped += 1;
        }
    }

    /// The kept outputs and the count of dropped ones.
    pub(crate) fn into_parts(self) -> (Vec<Message>, usize) {
        (self.kept, self.dropped)
    }
}

/// Roughly the memory a message holds: its strings, buffers and a word per JSON value.
pub(crate) fn approx_size(msg: &Message) -> usize {
    fn value(v: &Value) -> usize {
        8 + match v {
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(value).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + value(v)).sum(),
            _ => 0,
        }
    }
    let buffers: usize = msg.buffers.iter().map(Vec::len).sum();
    let metadata: usize = msg.metadata.iter().map(|(k, v)| k.len() + value(v)).sum();
    // Headers: a few short strings.
    512 + metadata + value(&msg.content) + buffers
}

impl ExecuteOutcome {
    /// Concatenated text of `stream` outputs named `name` (`stdout` or `stderr`).
    pub fn stream(&self, name: &str) -> String {
        self.outputs
            .iter()
            .filter(|m| {
                m.msg_type() == "stream"
                    && m.content.get("name").and_then(Value::as_str) == Some(name)
            })
            .filter_map(|m| m.content.get("text").and_then(Value::as_str))
            .collect()
    }

    /// Concatenated standard output.
    pub fn stdout(&self) -> String {
        self.stream("stdout")
    }

    /// The MIME bundle of the `execute_result`, if any.
    pub fn result(&self) -> Option<MimeBundle> {
        self.outputs
            .iter()
            .find(|m| m.msg_type() == "execute_result")
            .and_then(|m| m.content.get("data"))
            .and_then(Value::as_object)
            .cloned()
    }

    /// The `text/plain` form of the `execute_result`, if any.
    pub fn result_text(&self) -> Option<String> {
        self.result()?
            .get("text/plain")?
            .as_str()
            .map(str::to_owned)
    }

    /// Outputs of one message type.
    pub fn of_type<'a>(&'a self, msg_type: &'a str) -> impl Iterator<Item = &'a Message> + 'a {
        self.outputs
            .iter()
            .filter(move |m| m.msg_type() == msg_type)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn stream(text: &str) -> Message {
        Message {
            identities: Vec::new(),
            header: kernelgate_wire::Header {
                msg_type: "stream".into(),
                ..Default::default()
            },
            parent_header: None,
            metadata: Map::new(),
            content: json!({ "name": "stdout", "text": text }),
            buffers: Vec::new(),
        }
    }

    #[test]
    fn outputs_are_kept_up_to_their_budget_then_counted() {
        let mut outputs = KeptOutputs::new(10_000);
        for _ in 0..10 {
            outputs.push(stream(&"x".repeat(1_000)));
        }
        outputs.push(stream("short, but after one was dropped"));
        let (kept, dropped) = outputs.into_parts();
        assert!((5..10).contains(&kept.len()), "kept {}", kept.len());
        assert_eq!(kept.len() + dropped, 11);
        let (none, dropped) = {
            let mut o = KeptOutputs::new(0);
            o.push(stream("a"));
            o.into_parts()
        };
        assert!(none.is_empty());
        assert_eq!(dropped, 1);
    }
}
