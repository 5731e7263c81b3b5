//! `docker pull`-style progress: one line per layer, then `Digest:` and `Status:`.
//! Live bars on a terminal, appended lines otherwise, nothing but the result with --quiet.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdpull_fetch::{BlobDescriptor, Reference};
use rdpull_pipeline::{LayerState, PullOutcome, Reporter};

enum Mode {
    Quiet,
    /// Plain lines: states, and download progress every quarter.
    Lines(Mutex<Vec<u8>>),
    Bars(MultiProgress, Vec<ProgressBar>),
}

/// The display of one pull, made when the pull knows its layers.
struct Display {
    mode: Mode,
    to_stderr: bool,
    ids: Vec<String>,
    sizes: Vec<u64>,
}

/// What `rdpull pull` shows: a [`Reporter`] that draws the pull's layers.
pub(crate) struct Progress {
    quiet: bool,
    /// On stderr, leaving stdout to a container (`run`), as `docker run` does.
    to_stderr: bool,
    display: OnceLock<Display>,
}

/// One line on stdout, or on stderr.
fn emit(to_stderr: bool, line: &str) {
    if to_stderr {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    } else {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
}

impl Progress {
    pub(crate) fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            to_stderr: false,
            display: OnceLock::new(),
        }
    }

    /// Progress on stderr; with `quiet`, none at all.
    pub(crate) fn on_stderr(quiet: bool) -> Progress {
        Progress {
            quiet,
            to_stderr: true,
            display: OnceLock::new(),
        }
    }

    /// The closing lines; with --quiet only the reference, as `docker pull -q`.
    pub(crate) fn finish(&self, reference: &Reference, outcome: &PullOutcome) {
        if self.quiet {
            if !self.to_stderr {
                emit(false, &reference.to_string());
            }
            return;
        }
        let status = if outcome.up_to_date {
            format!("Image is up to date for {reference}")
        } else {
            format!("Downloaded newer image for {reference}")
        };
        emit(
            self.to_stderr,
            &format!("Digest: {}", outcome.image.target_digest),
        );
        emit(self.to_stderr, &format!("Status: {status}"));
        emit(self.to_stderr, &reference.to_string());
    }
}

impl Reporter for Progress {
    fn started(&self, reference: &Reference, layers: &[BlobDescriptor]) {
        let ids = layers
            .iter()
            .map(|l| l.digest.short().to_string())
            .collect();
        let sizes = layers.iter().map(|l| l.size).collect();
        let display = Display::new(self.quiet, self.to_stderr, ids, sizes);
        let tag = reference
            .tag()
            .unwrap_or_else(|| reference.digest().map_or("latest", |d| d.short()));
        display.say(&format!("{tag}: Pulling from {}", reference.repository()));
        let _ = self.display.set(display);
    }

    fn layer(&self, index: usize, state: LayerState) {
        if let Some(d) = self.display.get() {
            d.state(index, state);
        }
    }

    fn bytes(&self, index: usize, received: u64) {
        if let Some(d) = self.display.get() {
            d.bytes(index, received);
        }
    }
}

fn human(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2}GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1}MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1}kB", f / 1e3)
    } else {
        format!("{n}B")
    }
}

impl Display {
    /// `ids` are the short layer ids, `sizes` their compressed sizes.
    fn new(quiet: bool, to_stderr: bool, ids: Vec<String>, sizes: Vec<u64>) -> Display {
        let terminal = if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        let mode = if quiet {
            Mode::Quiet
        } else if terminal {
            let target = if to_stderr {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::stdout()
            };
            let mp = MultiProgress::with_draw_target(target);
            let style = ProgressStyle::with_template("{prefix}: {msg}").unwrap();
            let bars = ids
                .iter()
                .map(|id| {
                    let b = mp.add(ProgressBar::new(0).with_style(style.clone()));
                    b.set_prefix(id.clone());
                    b
                })
                .collect();
            Mode::Bars(mp, bars)
        } else {
            Mode::Lines(Mutex::new(vec![0; ids.len()]))
        };
        Display {
            mode,
            to_stderr,
            ids,
            sizes,
        }
    }

    /// A line above the layers (e.g. `bookworm: Pulling from debian`).
    fn say(&self, line: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(_) => emit(self.to_stderr, line),
            Mode::Bars(mp, _) => {
                let _ = mp.println(line);
            }
        }
    }

    fn state(&self, layer: usize, state: LayerState) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(_) => {
                let extra = if state == LayerState::Downloading {
                    format!(" 0B/{}", human(self.sizes[layer]))
                } else {
                    String::new()
                };
                let line = format!("{}: {}{extra}", self.ids[layer], state.text());
                emit(self.to_stderr, &line);
            }
            Mode::Bars(_, bars) => {
                let b = &bars[layer];
                b.set_message(state.text());
                if matches!(state, LayerState::Complete | LayerState::AlreadyExists) {
                    b.finish();
                }
            }
        }
    }

    /// `done` compressed bytes of `layer` have arrived.
    fn bytes(&self, layer: usize, done: u64) {
        let total = self.sizes[layer].max(1);
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(quarters) => {
                let q = (done * 4 / total).min(4) as u8;
                let mut seen = quarters.lock().unwrap();
                if q > seen[layer] && q < 4 {
                    seen[layer] = q;
                    let line = format!(
                        "{}: Downloading {}/{}",
                        self.ids[layer],
                        human(done),
                        human(self.sizes[layer])
                    );
                    emit(self.to_stderr, &line);
                }
            }
            Mode::Bars(_, bars) => {
                let width = 50;
                let filled = (done * width / total).min(width) as usize;
                let bar = format!(
                    "[{}>{}]",
                    "=".repeat(filled.saturating_sub(1)),
                    " ".repeat(width as usize - filled)
                );
                bars[layer].set_message(format!(
                    "Downloading {bar} {}/{}",
                    human(done),
                    human(self.sizes[layer])
                ));
            }
        }
    }
}
