//! Reading the files a user names: only regular files, and never more
//! than a stated limit, so `/dev/zero`, a FIFO or a folder is refused at
//! once instead of read without end or waited on forever.

use std::io::Read;
use std::path::Path;

/// Schedules and routing traces read back (a 100,000-layer schedule is
/// tens of MB; a day of recorded routing can be more).
pub const MAX_DATA_FILE_BYTES: u64 = 1 << 30;

/// The bytes of the regular file at `path`, at most `limit` of them: a
/// longer file is an error naming the limit, and so is anything that is
/// not a regular file (checked before opening, which on a FIFO would wait
/// for a writer).
pub fn read_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let kind = std::fs::metadata(path)?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a folder"
        } else {
            "not a regular file (a device, FIFO or socket)"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}"),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("it is larger than the {limit} bytes moec reads"),
        ));
    }
    Ok(bytes)
}

/// [`read_file`] as UTF-8 text.
pub fn read_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_file(path, limit)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_and_oversized_ones_are_refused_and_small_ones_read() {
        let e = read_file(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = read_file(Path::new("/"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("folder"), "{e}");
        let path = std::env::temp_dir().join(format!("moec-input-{}", std::process::id()));
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_file(&path, 10).unwrap(), b"0123456789");
        assert!(read_file(&path, 9)
            .unwrap_err()
            .to_string()
            .contains("larger than the 9 bytes"));
        std::fs::remove_file(&path).unwrap();
    }
}
