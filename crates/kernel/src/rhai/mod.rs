//! The built-in kernel: the Rhai scripting language, with limits on operations, the kernel's
//! memory, string, array and map sizes and call depth, so a runaway cell is stopped and reported
//! instead of taking the machine; an interrupt stops it too. State (variables and functions) persists between cells.

mod complete;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rhai::{Dynamic, Engine, EvalAltResult, ParseErrorType, Position, Scope, AST};
use serde_json::json;

use crate::handler::{Completeness, Completion, Kernel, KernelInfo, MimeBundle, Outcome};
use crate::io::{ExecContext, Flags};
use kernelgate_wire::content::LanguageInfo;

/// What `help()` shows in the pager.
const HELP: &str = "\
kernelgate built-in kernel: the Rhai language (https://rhai.rs), limited and sandboxed.

  print(x), debug(x)      write to stdout / stderr
  display(x)              show a value as display_data; display_html(html) as HTML
  clear_output()          clear this cell's output
  input(prompt), getpass(prompt)
                          read a line from the frontend (getpass hides it)
  page(x)                 show x in the pager; help() shows this text

Variables and functions persist between cells; the last expression is the cell's result.
Runaway cells are stopped by operation, memory, size and call-depth limits, and by an
interrupt.
";

/// Resource limits for one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RhaiLimits {
    /// Maximum operations per cell (a runaway loop stops here).
    pub max_operations: u64,
    /// Maximum string length in bytes.
    pub max_string_size: usize,
    /// Maximum array length.
    pub max_array_size: usize,
    /// Maximum object map size.
    pub max_map_size: usize,
    /// Maximum function call depth.
    pub max_call_levels: usize,
    /// Heap bytes the whole kernel may hold (variables of earlier cells included) before the
    /// running cell is stopped; 0: no limit. Needs [`crate::memory::CountingAllocator`].
    pub max_memory: usize,
}

impl Default for RhaiLimits {
    fn default() -> Self {
        RhaiLimits {
            max_operations: 1_000_000_000,
            max_string_size: 16 << 20,
            max_array_size: 1 << 20,
            max_map_size: 1 << 20,
            max_call_levels: 64,
            max_memory: 1 << 30,
        }
    }
}

/// The cell being run, reachable from the engine's callbacks (which must be `'static`).
type Current = Arc<Mutex<Option<ExecContext>>>;

/// What the progress callback stops a cell with when the memory limit is reached.
const OUT_OF_MEMORY: &str = "memory limit";

fn is_out_of_memory(why: &Dynamic) -> bool {
    why.clone().into_string().is_ok_and(|s| s == OUT_OF_MEMORY)
}

/// The Rhai kernel (kernelspec name `rhai`).
pub struct RhaiKernel {
    engine: Engine,
    max_memory: usize,
    /// Heap the running cell may take the kernel to (see `execute`); 0: no limit.
    memory_ceiling: Arc<AtomicUsize>,
    scope: Scope<'static>,
    functions: AST,
    current: Current,
    flags: Arc<OnceLock<Flags>>,
}

fn with_current(current: &Current, f: impl FnOnce(&ExecContext)) {
    let guard = current.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = guard.as_ref() {
        f(ctx);
    }
}

impl RhaiKernel {
    /// A kernel with `limits`.
    pub fn new(limits: RhaiLimits) -> RhaiKernel {
        let current: Current = Arc::new(Mutex::new(None));
        let flags: Arc<OnceLock<Flags>> = Arc::new(OnceLock::new());
        let mut engine = Engine::new();
        engine
            .set_max_operations(limits.max_operations)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_max_call_levels(limits.max_call_levels)
            .set_max_expr_depths(128, 64);

        let c = current.clone();
        engine.on_print(move |text| {
            with_current(&c, |ctx| ctx.stream("stdout", &format!("{text}\n")))
        });
        let c = current.clone();
        engine.on_debug(move |text, _source, pos| {
            with_current(&c, |ctx| ctx.stream("stderr", &format!("[{pos}] {text}\n")))
        });
        let f = flags.clone();
        let c = current.clone();
        let ceiling = Arc::new(AtomicUsize::new(limits.max_memory));
        let cell_ceiling = ceiling.clone();
        engine.on_progress(move |ops| {
            // After every operation: one growing value, or many, never gets far past the limit.
            let ceiling = cell_ceiling.load(Ordering::Relaxed);
            if ceiling > 0 && crate::memory::live_bytes() > ceiling {
                return Some(Dynamic::from(OUT_OF_MEMORY));
            }
            // Checked every 256 operations: cheap, and still stops a loop within microseconds.
            if ops & 0xFF != 0 {
                return None;
            }
            // A long cell publishes its held-back busy status now (try_lock: never wait here).
            if let Ok(guard) = c.try_lock() {
                if let Some(ctx) = guard.as_ref() {
                    ctx.publisher.flush_if_stale();
                }
            }
            let stop = f.get().is_some_and(|flags| {
                flags.interrupt.load(Ordering::Relaxed) || flags.shutdown.load(Ordering::Relaxed)
            });
            stop.then(|| Dynamic::from("interrupted"))
        });
        let c = current.clone();
        engine.register_fn(
            "input",
            move |prompt: &str| -> Result<String, Box<EvalAltResult>> {
                read_input(&c, prompt, false)
            },
        );
        let c = current.clone();
        engine.register_fn("input", move || -> Result<String, Box<EvalAltResult>> {
            read_input(&c, "", false)
        });
        let c = current.clone();
        engine.register_fn(
            "getpass",
            move |prompt: &str| -> Result<String, Box<EvalAltResult>> {
                read_input(&c, prompt, true)
            },
        );
        let c = current.clone();
        engine.register_fn("display", move |value: Dynamic| {
            let mut data = MimeBundle::new();
            data.insert("text/plain".into(), repr(&value).into());
            with_current(&c, |ctx| ctx.display(data));
        });
        let c = current.clone();
        engine.register_fn("page", move |value: Dynamic| {
            let text = if value.is_string() {
                value.to_string()
            } else {
                repr(&value)
            };
            let mut data = MimeBundle::new();
            data.insert("text/plain".into(), text.into());
            with_current(&c, |ctx| ctx.page(data));
        });
        let c = current.clone();
        engine.register_fn("help", move || {
            let mut data = MimeBundle::new();
            data.insert("text/plain".into(), HELP.into());
            with_current(&c, |ctx| ctx.page(data));
        });
        let c = current.clone();
        engine.register_fn("clear_output", move || {
            with_current(&c, |ctx| {
                ctx.publish("clear_output", &json!({ "wait": false }))
            });
        });
        let c = current.clone();
        engine.register_fn("display_html", move |html: &str| {
            let mut data = MimeBundle::new();
            data.insert("text/html".into(), html.into());
            data.insert("text/plain".into(), "<HTML>".into());
            with_current(&c, |ctx| ctx.display(data));
        });

        RhaiKernel {
            engine,
            max_memory: limits.max_memory,
            memory_ceiling: ceiling,
            scope: Scope::new(),
            functions: AST::empty(),
            current,
            flags,
        }
    }

    fn error_outcome(&self, code: &str, err: &EvalAltResult) -> Outcome {
        let ename = match err {
            EvalAltResult::ErrorTerminated(why, _) if is_out_of_memory(why) => {
                "MemoryLimitExceeded"
            }
            EvalAltResult::ErrorTerminated(..) => "Interrupted",
            EvalAltResult::ErrorTooManyOperations(..) => "OperationLimitExceeded",
            EvalAltResult::ErrorDataTooLarge(..) => "DataTooLarge",
            EvalAltResult::ErrorStackOverflow(..) => "StackOverflow",
            EvalAltResult::ErrorParsing(..) => "SyntaxError",
            EvalAltResult::ErrorRuntime(..) => "RuntimeError",
            EvalAltResult::ErrorVariableNotFound(..) => "NameError",
            EvalAltResult::ErrorFunctionNotFound(..) => "FunctionNotFound",
            EvalAltResult::ErrorMismatchDataType(..)
            | EvalAltResult::ErrorMismatchOutputType(..) => "TypeError",
            EvalAltResult::ErrorArithmetic(..) => "ArithmeticError",
            EvalAltResult::ErrorIndexNotFound(..) | EvalAltResult::ErrorArrayBounds(..) => {
                "IndexError"
            }
            _ => "Error",
        };
        let evalue = match err {
            EvalAltResult::ErrorTerminated(why, _) if is_out_of_memory(why) => format!(
                "the kernel's memory limit ({} MiB) was reached; free variables (x = ()) to go on",
                self.max_memory >> 20
            ),
            EvalAltResult::ErrorTerminated(..) => "execution was interrupted".to_owned(),
            other => strip_position(&other.to_string()),
        };
        error(ename, evalue, code, err.position())
    }
}

fn read_input(
    current: &Current,
    prompt: &str,
    password: bool,
) -> Result<String, Box<EvalAltResult>> {
    // Clone the context out so the lock is not held while waiting for the user.
    let ctx = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(ctx) = ctx else {
        return Err("input() is only available while a cell runs".into());
    };
    ctx.input(prompt, password)
        .map_err(|e| e.to_string().into())
}

/// How a value is shown as a result: strings quoted, like a REPL.
fn repr(value: &Dynamic) -> String {
    if value.is_string() {
        format!("{value:?}")
    } else {
        value.to_string()
    }
}

fn strip_position(text: &str) -> String {
    match text.rfind(" (line ") {
        Some(i) if text.ends_with(')') => text.get(..i).unwrap_or(text).to_owned(),
        _ => text.to_owned(),
    }
}

fn error(ename: &str, evalue: String, code: &str, pos: Position) -> Outcome {
    let mut traceback = vec![format!("{ename}: {evalue}")];
    if let (Some(line), Some(col)) = (pos.line(), pos.position()) {
        if let Some(src) = code.lines().nth(line.saturating_sub(1)) {
            traceback.push(format!("  line {line}, column {col}:"));
            traceback.push(format!("    {src}"));
            traceback.push(format!("    {}^", " ".repeat(col.saturating_sub(1))));
        }
    }
    Outcome::Error {
        ename: ename.to_owned(),
        evalue,
        traceback,
    }
}

impl Kernel for RhaiKernel {
    fn info(&self) -> KernelInfo {
        KernelInfo {
            implementation: "kernelgate-rhai".into(),
            implementation_version: env!("CARGO_PKG_VERSION").into(),
            language_info: LanguageInfo {
                name: "rhai".into(),
                version: "1".into(),
                mimetype: "text/x-rhai".into(),
                file_extension: ".rhai".into(),
                pygments_lexer: Some("rust".into()),
                codemirror_mode: Some(json!("rust")),
                nbconvert_exporter: None,
                extra: Default::default(),
            },
            banner: "kernelgate built-in kernel: Rhai (https://rhai.rs), sandboxed and limited"
                .into(),
        }
    }

    fn execute(&mut self, code: &str, ctx: &ExecContext) -> Outcome {
        let _ = self.flags.set(ctx.flags.clone());
        let ast = match self.engine.compile_with_scope(&self.scope, code) {
            Ok(ast) => ast,
            Err(e) => {
                return error(
                    "SyntaxError",
                    strip_position(&e.to_string()),
                    code,
                    e.position(),
                )
            }
        };
        let run = self.functions.merge(&ast);
        // A cell may not take the kernel past its limit; when earlier cells' variables already
        // have, not past where it started (so that it can still free them).
        if self.max_memory > 0 {
            let ceiling = self.max_memory.max(crate::memory::live_bytes());
            self.memory_ceiling.store(ceiling, Ordering::Relaxed);
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(ctx.clone());
        let result = self
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &run);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match result {
            Ok(value) => {
                self.functions = self.functions.merge(&ast.clone_functions_only());
                if value.is_unit() {
                    Outcome::Ok(None)
                } else {
                    let mut data = MimeBundle::new();
                    data.insert("text/plain".into(), repr(&value).into());
                    Outcome::Ok(Some(data))
                }
            }
            Err(e) => self.error_outcome(code, &e),
        }
    }

    fn complete(&mut self, code: &str, cursor_pos: usize) -> Completion {
        complete::complete(&self.engine, &self.scope, &self.functions, code, cursor_pos)
    }

    fn inspect(&mut self, code: &str, cursor_pos: usize, _detail_level: u8) -> Option<MimeBundle> {
        complete::inspect(&self.engine, &self.scope, &self.functions, code, cursor_pos)
    }

    fn is_complete(&mut self, code: &str) -> Completeness {
        match self.engine.compile_with_scope(&self.scope, code) {
            Ok(_) => Completeness::Complete,
            Err(e) => match e.err_type() {
                ParseErrorType::UnexpectedEOF => Completeness::Incomplete("    ".into()),
                ParseErrorType::MissingToken(..) | ParseErrorType::MissingSymbol(..)
                    if at_end(code, e.position()) =>
                {
                    Completeness::Incomplete("    ".into())
                }
                ParseErrorType::BadInput(rhai::LexError::UnterminatedString) => {
                    Completeness::Incomplete(String::new())
                }
                _ => Completeness::Invalid,
            },
        }
    }
}

/// Whether a parse error position is at (or past) the end of the code: the parser ran out of
/// input rather than meeting something wrong.
fn at_end(code: &str, pos: Position) -> bool {
    if pos.is_none() {
        return true;
    }
    let lines = code.lines().count().max(1);
    pos.line().is_some_and(|l| l >= lines)
        && code
            .lines()
            .last()
            .is_none_or(|last| pos.position().is_none_or(|c| c > last.chars().count()))
}
