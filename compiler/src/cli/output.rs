//! Writing results: diagnostics to standard error, files atomically.

use moec::diag::{render, Diagnostic};
use moec::driver::Session;
use moec::source::SourceMap;
use std::io::Write;
use std::path::Path;

/// Prints diagnostics to standard error; true if any is an error.
pub fn report(sources: &SourceMap, diagnostics: &[Diagnostic]) -> bool {
    if !diagnostics.is_empty() {
        eprint!("{}", render(sources, diagnostics));
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        eprintln!("error: {errors} error{} found", if errors == 1 { "" } else { "s" });
    }
    errors > 0
}

/// Reads and checks `file` and its imports, printing the diagnostics; the
/// exit status when it cannot be read or has errors.
pub fn load_checked(file: &Path) -> Result<Session, u8> {
    let session = moec::driver::check(&moec::source::FsReader, file).map_err(|e| {
        eprintln!("error: {}", e.0);
        super::EXIT_DIAGNOSTICS
    })?;
    if report_session(&session) {
        return Err(super::EXIT_DIAGNOSTICS);
    }
    Ok(session)
}

/// Prints a session's diagnostics; true if any is an error.
pub fn report_session(session: &Session) -> bool {
    report(&session.loaded.sources, &session.diagnostics.sorted())
}

/// Writes `text` to `path` through a temporary file in the same folder and a
/// rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes to `path` if given, else standard output; exit status on failure.
pub fn emit(path: Option<&Path>, text: &str) -> Result<(), u8> {
    match path {
        Some(p) => write_atomic(p, text).map_err(|e| {
            eprintln!("error: cannot write `{}`: {e}", p.display());
            super::EXIT_DIAGNOSTICS
        }),
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`moec ... | head`) is not an error worth a panic.
            let _ = out.write_all(text.as_bytes());
            Ok(())
        }
    }
}
