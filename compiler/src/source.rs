//! Source files: reading them (with their imports) and keeping their text
//! for diagnostics.

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::syntax::{self, ast::Item, ast::SourceFile, FileId, Span};
use codespan_reporting::files::SimpleFiles;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest source file moec reads.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// The text of every file read, indexed by [`FileId`].
#[derive(Default)]
pub struct SourceMap {
    files: SimpleFiles<String, String>,
    paths: Vec<PathBuf>,
}

impl SourceMap {
    /// Adds a file; `path` is where imports in it are resolved from.
    pub fn add(&mut self, path: &Path, text: String) -> FileId {
        self.paths.push(path.to_path_buf());
        FileId(self.files.add(path.display().to_string(), text))
    }

    /// For codespan-reporting.
    pub fn files(&self) -> &SimpleFiles<String, String> {
        &self.files
    }

    /// The text of a file.
    pub fn text(&self, id: FileId) -> &str {
        self.files.get(id.0).map(|f| f.source().as_str()).unwrap_or("")
    }

    /// The path a file was read from.
    pub fn path(&self, id: FileId) -> &Path {
        self.paths.get(id.0).map(PathBuf::as_path).unwrap_or(Path::new(""))
    }
}

/// Where source bytes come from: the file system, or memory in tests.
pub trait SourceReader {
    /// The bytes of the file at `path`, a source or a small data file (at
    /// most `MAX_FILE_BYTES` from the file system).
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;

    /// The bytes of a data file that may be larger (a routing trace): at
    /// most `limit`.
    fn read_data(&self, path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
        let bytes = self.read(path)?;
        if bytes.len() as u64 > limit {
            return Err(std::io::Error::other(format!("it is larger than {limit} bytes")));
        }
        Ok(bytes)
    }
}

/// Reads from the file system.
pub struct FsReader;

impl SourceReader for FsReader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        moec_runtime::input::read_file(path, MAX_FILE_BYTES as u64)
    }

    fn read_data(&self, path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
        moec_runtime::input::read_file(path, limit)
    }
}

/// Files held in memory, for tests.
#[derive(Default)]
pub struct MemoryReader(pub BTreeMap<PathBuf, Vec<u8>>);

impl SourceReader for MemoryReader {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "not found"))
    }
}

/// A root file with everything it imports, parsed.
pub struct Loaded {
    pub sources: SourceMap,
    /// Parsed files in the order they were read (root first).
    pub files: Vec<(FileId, SourceFile)>,
    pub diagnostics: Diagnostics,
}

/// Why the root file could not be read at all (E0042, no span: there is no
/// text to point into).
#[derive(Debug)]
pub struct RootError(pub Diagnostic);

/// Reads and parses `root` and, transitively, its imports. A file imported
/// twice (or in a cycle) is read once.
pub fn load(reader: &dyn SourceReader, root: &Path) -> Result<Loaded, RootError> {
    let bytes = reader.read(root).map_err(|e| RootError(unreadable(root, &e)))?;
    let mut loaded = Loaded {
        sources: SourceMap::default(),
        files: Vec::new(),
        diagnostics: Diagnostics::default(),
    };
    let mut seen = vec![normalise(root)];
    let mut queue = vec![(root.to_path_buf(), bytes)];
    while let Some((path, bytes)) = queue.pop() {
        let Some((id, file)) = parse_bytes(&mut loaded, &path, bytes) else {
            continue;
        };
        for item in &file.items {
            let Item::Import(imp) = item else { continue };
            let target = path.parent().unwrap_or(Path::new("")).join(&imp.path);
            let key = normalise(&target);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            match reader.read(&target) {
                Ok(b) => queue.insert(0, (target, b)),
                Err(e) => loaded.diagnostics.push(
                    Diagnostic::error(Code::E0011, imp.path_span, format!("cannot read `{}`: {e}", imp.path))
                        .with_label("imported here")
                        .with_hint(format!(
                            "import paths are relative to the importing file's folder ({})",
                            display_dir(&path)
                        )),
                ),
            }
        }
        loaded.files.push((id, file));
    }
    Ok(loaded)
}

/// The diagnostic for a file named on the command line that cannot be read.
pub fn unreadable(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::global(Code::E0042, format!("cannot read `{}`: {e}", path.display()))
}

/// Adds a file's bytes to `sources` as text, or says (E0019) why they are
/// not a source file: too large, or not UTF-8 (the span on the first
/// invalid byte, shown in a lossy copy of the text).
pub fn add_text(sources: &mut SourceMap, path: &Path, bytes: Vec<u8>) -> Result<FileId, Diagnostic> {
    if bytes.len() > MAX_FILE_BYTES {
        let id = sources.add(path, String::new());
        return Err(Diagnostic::error(
            Code::E0019,
            Span::new(id, 0, 0),
            format!(
                "`{}` is {} bytes; moec reads files up to {MAX_FILE_BYTES} bytes",
                path.display(),
                bytes.len()
            ),
        ));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(sources.add(path, text)),
        Err(e) => {
            // The lossy copy is the same text up to the first invalid byte.
            let at = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let id = sources.add(path, text);
            Err(Diagnostic::error(
                Code::E0019,
                Span::new(id, at, at + char::REPLACEMENT_CHARACTER.len_utf8()),
                format!("`{}` is not UTF-8 text", path.display()),
            )
            .with_label(format!("invalid byte at offset {at}")))
        }
    }
}

/// Parses one file's bytes, refusing what is not UTF-8 text of a sane size.
fn parse_bytes(loaded: &mut Loaded, path: &Path, bytes: Vec<u8>) -> Option<(FileId, SourceFile)> {
    match add_text(&mut loaded.sources, path, bytes) {
        Ok(id) => {
            let (file, diags) = syntax::parse(id, loaded.sources.text(id));
            loaded.diagnostics.extend(diags);
            Some((id, file))
        }
        Err(d) => {
            loaded.diagnostics.push(d);
            None
        }
    }
}

/// A path with `.` and `a/..` folded, so one file is not read twice under
/// two spellings.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

fn display_dir(p: &Path) -> String {
    match p.parent().map(|d| d.display().to_string()) {
        Some(d) if !d.is_empty() => d,
        _ => ".".into(),
    }
}
