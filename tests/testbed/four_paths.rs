//! One image run through the four paths a container can take: the built-in launcher,
//! `--runtime runc`, `--runtime crun` (`rdpull run --rm`), and `rdpull bundle` then
//! `runc run`; each run bounded in time, `ps -a` empty after each `--rm`.

use std::time::{Duration, Instant};

use super::*;

/// The most one run may take (a hang fails the test, it does not stall it).
const BOUND: Duration = Duration::from_secs(90);

/// How a run ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Exit code and stdout.
    Ran(i32, String),
    /// The error line after `rdpull: error: `.
    Refused(String),
}

pub(super) fn ran(stdout: &str) -> Outcome {
    Outcome::Ran(0, stdout.to_string())
}

pub(super) fn refused(line: &str) -> Outcome {
    Outcome::Refused(line.to_string())
}

/// Run `command` to its end within [`BOUND`]; killed and failed past it.
fn bounded(mut command: Command, what: &str) -> Output {
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if start.elapsed() > BOUND {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what}: still running after {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter.join().unwrap()
}

/// What one path's run ended as.
fn outcome(o: &Output, what: &str) -> Outcome {
    let err = stderr(o);
    match o.status.code() {
        Some(0) if err.is_empty() => Outcome::Ran(0, stdout(o)),
        Some(code @ (1 | 125)) => {
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines.len(), 1, "{what}: one line: {err}");
            let line = lines[0]
                .strip_prefix("rdpull: error: ")
                .unwrap_or_else(|| panic!("{what}: {err}"));
            // The run paths refuse with docker run's 125, bundle with rdpull's 1.
            assert_eq!(
                code == 1,
                what.contains("bundle"),
                "{what}: exit code {code}: {err}"
            );
            Outcome::Refused(line.to_string())
        }
        code => Outcome::Ran(code.unwrap_or(-1), format!("{}{err}", stdout(o))),
    }
}

/// `image` run with the `run` flags `flags` through each path: `(path, outcome)`.
pub(super) fn four_paths(
    root: &Path,
    t: &Path,
    image: &str,
    flags: &[&str],
) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    for runtime in ["builtin", "runc", "crun"] {
        let what = format!("{runtime} {flags:?}");
        let mut args = vec!["--plain-http", "-q", "run", "--rm", "--runtime", runtime];
        args.extend_from_slice(flags);
        args.push(image);
        let c = command(root, &args);
        let c = if runtime == "crun" {
            without_unified_hierarchy(&c)
        } else {
            c
        };
        out.push((runtime.to_string(), outcome(&bounded(c, &what), &what)));
        let ps = stdout(&ok(rdpull(root, &["ps", "-a"])));
        assert_eq!(ps.lines().count(), 1, "{what}: ps -a lists nothing: {ps}");
    }
    let dir = t.join("bundle");
    let what = format!("bundle + runc {flags:?}");
    let mut args = vec!["--plain-http", "-q", "bundle"];
    args.extend_from_slice(flags);
    args.extend([image, dir.to_str().unwrap()]);
    let got = match outcome(&bounded(command(root, &args), &what), &what) {
        Outcome::Ran(0, _) => {
            let id = format!("rdpull-paths-{}", std::process::id());
            outcome(&bounded(bundle_runtime("runc", &dir, &id), &what), &what)
        }
        other => other,
    };
    out.push(("bundle + runc".to_string(), got));
    let _ = std::fs::remove_dir_all(&dir);
    out
}
