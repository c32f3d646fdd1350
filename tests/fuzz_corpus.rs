//! The fuzz targets' corpora, replayed on every `cargo test`: each committed
//! input of `fuzz/corpus/<target>/` (the seeds `fuzz/seed.py` writes and
//! every input a fuzzer found a crash, hang or runaway allocation with)
//! goes through the target's body, then a bounded number of deterministic
//! mutations of the small ones do. The long runs are cargo-fuzz's
//! (docs/ARCHITECTURE.md, "Fuzzing"); this is the part that fits CI.

#[path = "../fuzz/src/lib.rs"]
mod targets;

mod common;

use std::path::PathBuf;

/// Mutations of each small input, per target.
const MUTATIONS: u64 = 24;
/// Sources larger than this are replayed but not mutated: a mutation of a
/// whole wafer example costs a compile of the wafer.
const MUTATE_SOURCES_BELOW_BYTES: usize = 4096;
/// The test model's schedules are about 15 KB and run in milliseconds.
const MUTATE_SCHEDULES_BELOW_BYTES: usize = 16 * 1024;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = common::root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("a corpus file");
            (p, bytes)
        })
        .collect()
}

/// A deterministic byte mutator (xorshift): flips, deletions, duplications
/// and digit swaps, the edits that reach size limits and number parsing.
fn mutate(input: &[u8], seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = input.to_vec();
    for _ in 0..1 + next() % 4 {
        if out.is_empty() {
            out.push(b'0');
        }
        let at = (next() % out.len() as u64) as usize;
        match next() % 5 {
            0 => out[at] ^= 1 << (next() % 8),
            1 => {
                let len = ((next() % 16) as usize).min(out.len() - at);
                out.drain(at..at + len);
            }
            2 => {
                let len = ((next() % 32) as usize).min(out.len() - at);
                let piece = out[at..at + len].to_vec();
                out.splice(at..at, piece);
            }
            3 => out[at] = b"0123456789"[(next() % 10) as usize],
            _ => out.insert(at, b"9e"[(next() % 2) as usize]),
        }
    }
    out
}

fn replay(target: &str, body: fn(&[u8]), mutate_below: usize) {
    for (path, bytes) in corpus(target) {
        body(&bytes);
        if bytes.len() < mutate_below {
            for seed in 0..MUTATIONS {
                let mutated = mutate(&bytes, seed);
                // A panic names the input, so it can be committed as a regression.
                let outcome = std::panic::catch_unwind(|| body(&mutated));
                assert!(
                    outcome.is_ok(),
                    "{target}: mutation {seed} of {} panicked; input: {:?}",
                    path.display(),
                    String::from_utf8_lossy(&mutated)
                );
            }
        }
    }
}

#[test]
fn the_front_end_corpus_replays() {
    replay("front_end", targets::front_end, MUTATE_SOURCES_BELOW_BYTES);
}

#[test]
fn the_schedule_corpus_replays() {
    replay("schedule", targets::schedule, MUTATE_SCHEDULES_BELOW_BYTES);
}

#[test]
fn the_data_file_corpus_replays() {
    replay("data_file", targets::data_file, MUTATE_SOURCES_BELOW_BYTES);
}
