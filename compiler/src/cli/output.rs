//! Writing results: diagnostics to standard error, files atomically.

use moec::diag::{render, Diagnostic};
pub use moec::driver::run_error;
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
        report(&moec::source::SourceMap::default(), &[e.0]);
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

/// Writes `text` to `path` so a reader never sees half a file, without
/// ever replacing what is not a regular file:
///
/// - a regular file, or nothing yet: through a temporary file beside it
///   and a rename (the old file's permissions kept); the temporary file is
///   removed on any failure (only a kill between its creation and the
///   rename can leave a `.NAME.moec-*` behind);
/// - a symbolic link: the same, onto the file it points to, so the link
///   stays a link;
/// - a device, FIFO or socket (`/dev/stdout`, a named pipe): written
///   through, in place, and an error writing (`/dev/full`) is an error.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    // Follow links to what they name; a dangling link is written through.
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(resolved) => resolved,
            Err(_) => return write_through(path, text),
        },
        _ => path.to_path_buf(),
    };
    let existing = std::fs::metadata(&target).ok();
    if existing.as_ref().is_some_and(|m| !m.is_file()) {
        return write_through(&target, text);
    }
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    // Removed on drop unless persisted: every early return cleans up.
    // Created as `File::create` would (0666 less the umask), not the
    // temporary file's usual owner-only mode.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.moec-"))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    if let Some(m) = existing {
        tmp.as_file().set_permissions(m.permissions())?;
    }
    tmp.persist(&target).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `text` into an existing special file (or through a dangling
/// link) in place: opened for writing, never created as a regular file in
/// a device's stead, flushed so a full device reports it.
fn write_through(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.flush()
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
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                // A reader that stopped early (`moec ... | head`) wanted no more.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: cannot write standard output: {e}");
                    Err(super::EXIT_DIAGNOSTICS)
                }
                _ => Ok(()),
            }
        }
    }
}
