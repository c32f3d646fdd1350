//! `moec fmt FILE`: canonical layout, printed, written back or checked.

use super::output::{emit, report, write_atomic};
use moec::source::{add_text, SourceMap};
use moec::syntax::{format::format, parse};
use std::path::Path;

/// Runs `moec fmt`.
pub fn run(file: &Path, write: bool, check: bool) -> Result<(), u8> {
    let mut sources = SourceMap::default();
    let refuse = |sources: &SourceMap, d| {
        report(sources, &[d]);
        super::EXIT_DIAGNOSTICS
    };
    let bytes = moec_runtime::input::read_file(file, moec::source::MAX_FILE_BYTES as u64)
        .map_err(|e| refuse(&sources, moec::source::unreadable(file, &e)))?;
    let id = add_text(&mut sources, file, bytes).map_err(|d| refuse(&sources, d))?;
    let text = sources.text(id).to_string();
    let (ast, diags) = parse(id, &text);
    if report(&sources, &diags) {
        return Err(super::EXIT_DIAGNOSTICS);
    }
    let formatted = format(&ast, &text);
    if check {
        if formatted != text {
            eprintln!(
                "{} is not formatted; run `moec fmt --write {}`",
                file.display(),
                file.display()
            );
            return Err(super::EXIT_DIAGNOSTICS);
        }
        return Ok(());
    }
    if write {
        if formatted != text {
            write_atomic(file, &formatted).map_err(|e| {
                eprintln!("error: cannot write `{}`: {e}", file.display());
                super::EXIT_DIAGNOSTICS
            })?;
        }
        return Ok(());
    }
    emit(None, &formatted)
}
