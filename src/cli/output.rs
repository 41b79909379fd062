//! Writing results to stdout; a closed pipe (`anodet score … | head`) ends quietly.

use std::io::Write;

/// Writes one line to stdout; exits 0 silently if the reader has gone away.
pub fn line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

/// Prints a per-file problem to stderr in anodet's one-line format.
pub fn problem(error: &anodet::Error) {
    eprintln!("anodet: {error}");
}
