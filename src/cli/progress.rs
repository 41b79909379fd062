//! Progress bars on stderr (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

pub struct Bar(ProgressBar);

impl Bar {
    pub fn new() -> Self {
        let bar = ProgressBar::hidden();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        Bar(bar)
    }
}

impl anodet::progress::Progress for Bar {
    fn start(&self, total: u64, what: &str) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_position(0);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.set_message(what.to_string());
    }

    fn advance(&self, done: u64) {
        self.0.inc(done);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
