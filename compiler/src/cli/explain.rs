//! `moec explain CODE`: the long explanation of a diagnostic code.

use moec::diag::Code;

/// Runs `moec explain`.
pub fn run(code: Option<&str>) -> Result<(), u8> {
    let Some(name) = code else {
        for c in Code::all() {
            println!("{}  {}", c.as_str(), c.title());
        }
        return Ok(());
    };
    match Code::parse(name) {
        Some(c) => {
            println!("{}: {}\n\n{}", c.as_str(), c.title(), c.explanation());
            Ok(())
        }
        None => {
            eprintln!("error: no diagnostic code `{name}`; `moec explain` lists them all");
            Err(super::EXIT_USAGE)
        }
    }
}
