//! `docker pull`-style progress: one line per layer, then `Digest:` and `Status:`.
//! Live bars on a terminal, appended lines otherwise, nothing but the result with --quiet.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A layer's state, as `docker pull` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerState {
    Waiting,
    Downloading,
    Verifying,
    Extracting,
    Complete,
    AlreadyExists,
}

impl LayerState {
    fn text(self) -> &'static str {
        match self {
            LayerState::Waiting => "Waiting",
            LayerState::Downloading => "Downloading",
            LayerState::Verifying => "Verifying Checksum",
            LayerState::Extracting => "Extracting",
            LayerState::Complete => "Pull complete",
            LayerState::AlreadyExists => "Already exists",
        }
    }
}

enum Mode {
    Quiet,
    /// Plain lines: states, and download progress every quarter.
    Lines(Mutex<Vec<u8>>),
    Bars(MultiProgress, Vec<ProgressBar>),
}

pub struct Progress {
    mode: Mode,
    ids: Vec<String>,
    sizes: Vec<u64>,
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

impl Progress {
    /// `ids` are the short layer ids, `sizes` their compressed sizes.
    pub fn new(quiet: bool, ids: Vec<String>, sizes: Vec<u64>) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
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
        Progress { mode, ids, sizes }
    }

    /// A line above the layers (e.g. `bookworm: Pulling from debian`).
    pub fn say(&self, line: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(_) => println!("{line}"),
            Mode::Bars(mp, _) => {
                let _ = mp.println(line);
            }
        }
    }

    pub fn state(&self, layer: usize, state: LayerState) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(_) => {
                let mut out = std::io::stdout().lock();
                let extra = if state == LayerState::Downloading {
                    format!(" 0B/{}", human(self.sizes[layer]))
                } else {
                    String::new()
                };
                let _ = writeln!(out, "{}: {}{extra}", self.ids[layer], state.text());
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
    pub fn bytes(&self, layer: usize, done: u64) {
        let total = self.sizes[layer].max(1);
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(quarters) => {
                let q = (done * 4 / total).min(4) as u8;
                let mut seen = quarters.lock().unwrap();
                if q > seen[layer] && q < 4 {
                    seen[layer] = q;
                    println!(
                        "{}: Downloading {}/{}",
                        self.ids[layer],
                        human(done),
                        human(self.sizes[layer])
                    );
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

    /// The closing lines; with --quiet only the reference, as `docker pull -q`.
    pub fn finish(&self, digest: &str, status: &str, reference: &str) {
        match &self.mode {
            Mode::Quiet => println!("{reference}"),
            Mode::Lines(_) | Mode::Bars(..) => {
                println!("Digest: {digest}");
                println!("Status: {status}");
                println!("{reference}");
            }
        }
    }
}
