//! Completion and inspection of variables and functions for the Rhai kernel.

use std::collections::BTreeSet;

use rhai::{Engine, Scope, AST};

use crate::handler::{Completion, MimeBundle};

const KEYWORDS: &[&str] = &[
    "let", "const", "if", "else", "switch", "do", "while", "loop", "until", "for", "in", "break",
    "continue", "return", "throw", "try", "catch", "fn", "import", "export", "as", "true", "false",
    "this", "print", "debug", "type_of", "input", "display",
];

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier around a cursor given in unicode code points: (start, end, text) in code points.
fn word_at(code: &str, cursor_pos: usize) -> (usize, usize, String) {
    let chars: Vec<char> = code.chars().collect();
    let cursor = cursor_pos.min(chars.len());
    let mut start = cursor;
    while start > 0 && chars.get(start - 1).is_some_and(|c| is_ident(*c)) {
        start -= 1;
    }
    let mut end = cursor;
    while chars.get(end).is_some_and(|c| is_ident(*c)) {
        end += 1;
    }
    let word = chars
        .get(start..end)
        .map(|w| w.iter().collect())
        .unwrap_or_default();
    (start, end, word)
}

fn function_names(engine: &Engine, functions: &AST) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = functions
        .iter_functions()
        .map(|f| f.name.to_owned())
        .collect();
    for sig in engine.gen_fn_signatures(true) {
        let name = sig.split('(').next().unwrap_or("").trim();
        let name = name.rsplit(' ').next().unwrap_or(name);
        if !name.is_empty() && name.chars().all(is_ident) {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Candidates for the identifier before the cursor: variables, functions and keywords.
pub fn complete(
    engine: &Engine,
    scope: &Scope,
    functions: &AST,
    code: &str,
    cursor_pos: usize,
) -> Completion {
    let (start, _end, word) = word_at(code, cursor_pos);
    let prefix: String = word
        .chars()
        .take(cursor_pos.saturating_sub(start))
        .collect();
    let mut candidates: BTreeSet<String> =
        scope.iter().map(|(name, _, _)| name.to_owned()).collect();
    candidates.extend(function_names(engine, functions));
    candidates.extend(KEYWORDS.iter().map(|k| (*k).to_owned()));
    let matches = candidates
        .into_iter()
        .filter(|c| c.starts_with(&prefix) && !prefix.is_empty())
        .collect();
    Completion {
        matches,
        cursor_start: start,
        cursor_end: cursor_pos.min(start + word.chars().count()),
    }
}

/// Help for the variable or function under the cursor.
pub fn inspect(
    engine: &Engine,
    scope: &Scope,
    functions: &AST,
    code: &str,
    cursor_pos: usize,
) -> Option<MimeBundle> {
    let (_, _, word) = word_at(code, cursor_pos);
    if word.is_empty() {
        return None;
    }
    let mut text = Vec::new();
    if let Some((_, is_const, value)) = scope.iter().find(|(name, _, _)| *name == word) {
        let kind = if is_const { "constant" } else { "variable" };
        text.push(format!(
            "{word}: {kind} of type {}\nvalue: {value}",
            value.type_name()
        ));
    }
    for f in functions.iter_functions().filter(|f| f.name == word) {
        text.push(format!(
            "fn {}({})  (defined in this session)",
            f.name,
            f.params.join(", ")
        ));
    }
    for sig in engine.gen_fn_signatures(true) {
        let name = sig.split('(').next().unwrap_or("").trim();
        if name.rsplit(' ').next() == Some(word.as_str()) {
            text.push(sig);
        }
    }
    if text.is_empty() {
        return None;
    }
    let mut data = MimeBundle::new();
    data.insert("text/plain".into(), text.join("\n").into());
    Some(data)
}
