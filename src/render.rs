//! How stored images are shown: `images`, `inspect`, `history`, `prune`, with docker's
//! conventions (sizes in SI units to three significant digits, relative times).

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use rdpull_snapshot::{HistoryEntry, ImageDetails, ImageRecord, PruneReport};

/// A size as docker prints one: `0B`, `5.01kB`, `121MB`, `2.32GB` (units of 1000).
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    let digits_before = if v < 1.0 {
        1
    } else {
        v.log10().floor() as usize + 1
    };
    let decimals = 3usize.saturating_sub(digits_before);
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

/// `rdpull images`: a table, manifest digests alone (`quiet`), or JSON lines.
pub(crate) fn images(
    out: &mut impl Write,
    list: &[ImageRecord],
    quiet: bool,
    json: bool,
) -> io::Result<()> {
    if quiet {
        for i in list {
            writeln!(out, "{}", i.manifest_digest)?;
        }
    } else if json {
        for i in list {
            let line = serde_json::json!({
                "name": i.name,
                "manifest_digest": i.manifest_digest,
                "config_digest": i.config_digest,
                "platform": i.platform,
                "size": i.size(),
                "layers": i.layers.len(),
            });
            writeln!(out, "{line}")?;
        }
    } else {
        writeln!(
            out,
            "{:<50} {:<73} {:>10} {:>6}",
            "REF", "MANIFEST DIGEST", "SIZE", "LAYERS"
        )?;
        for i in list {
            writeln!(
                out,
                "{:<50} {:<73} {:>10} {:>6}",
                i.name,
                i.manifest_digest.to_string(),
                human_size(i.size()),
                i.layers.len()
            )?;
        }
    }
    Ok(())
}

/// `rdpull inspect`: a JSON array of images, as `docker inspect` prints, or with no
/// image the store's own state as one JSON object.
pub(crate) fn inspect(out: &mut impl Write, details: &impl serde::Serialize) -> io::Result<()> {
    let json = serde_json::to_string_pretty(details).map_err(io::Error::other)?;
    writeln!(out, "{json}")
}

/// `rdpull history`: the config's history as `docker history` shows it, newest first,
/// the image id on the newest step; `no_trunc` shows full ids and commands.
pub(crate) fn history(
    out: &mut impl Write,
    details: &ImageDetails,
    no_trunc: bool,
) -> io::Result<()> {
    let steps: Vec<HistoryEntry> = details.history();
    let rows: Vec<HistoryRow<'_>> = steps
        .iter()
        .rev()
        .map(|step| HistoryRow {
            created: step.created.as_deref(),
            created_by: &step.created_by,
            size: step.layer.map_or(0, |l| details.layers[l].unpacked_size),
            comment: &step.comment,
        })
        .collect();
    let id = if no_trunc {
        details.config_digest.to_string()
    } else {
        details.config_digest.hex()[..12].to_string()
    };
    write_history(out, &id, &rows, no_trunc)
}

/// One row of `history`, newest first.
struct HistoryRow<'a> {
    created: Option<&'a str>,
    created_by: &'a str,
    size: u64,
    comment: &'a str,
}

fn write_history(
    out: &mut impl Write,
    id: &str,
    rows: &[HistoryRow<'_>],
    no_trunc: bool,
) -> io::Result<()> {
    let id_width = id.len().max(12);
    writeln!(
        out,
        "{:<id_width$}   {:<15} {:<45} {:>8}   COMMENT",
        "IMAGE", "CREATED", "CREATED BY", "SIZE"
    )?;
    for (n, row) in rows.iter().enumerate() {
        let created_by = if no_trunc {
            row.created_by.to_string()
        } else {
            ellipsis(row.created_by, 45)
        };
        writeln!(
            out,
            "{:<id_width$}   {:<15} {:<45} {:>8}   {}",
            if n == 0 { id } else { "<missing>" },
            row.created.map_or("N/A".into(), ago),
            created_by,
            human_size(row.size),
            row.comment
        )?;
    }
    Ok(())
}

/// `rdpull prune`: what went, and the space it gave back.
pub(crate) fn prune(out: &mut impl Write, report: &PruneReport) -> io::Result<()> {
    for s in &report.snapshots {
        writeln!(out, "Deleted snapshot: {s}")?;
    }
    for b in &report.blobs {
        writeln!(out, "Deleted blob: {b}")?;
    }
    for b in &report.partial_downloads {
        writeln!(out, "Deleted partial download: {b}")?;
    }
    if report.orphan_dirs > 0 {
        writeln!(
            out,
            "Deleted orphan snapshot directories: {}",
            report.orphan_dirs
        )?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        human_size(report.bytes_freed)
    )?;
    Ok(())
}

/// At most `max` characters, the last one `…` when cut (docker's `--no-trunc` off).
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{cut}…")
}

/// `2 years ago`, from an RFC 3339 time, with docker's (go-units') wording.
fn ago(rfc3339: &str) -> String {
    let Some(then) = unix_seconds(rfc3339) else {
        return rfc3339.to_string();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let secs = (now - then).max(0);
    let (minutes, hours) = (secs / 60, secs / 3600);
    let text = match () {
        _ if secs < 1 => "Less than a second".to_string(),
        _ if secs == 1 => "1 second".to_string(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
    };
    format!("{text} ago")
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
fn unix_seconds(t: &str) -> Option<i64> {
    let num = |a: usize, b: usize| t.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, s) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let zone = t[19..].trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone {
        "Z" | "z" | "" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let hh: i64 = z.get(1..3)?.parse().ok()?;
            let mm: i64 = z.get(4..6)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + s - offset)
}

/// `rdpull ps`: `docker ps`'s columns; running containers, or with `all` every one.
pub(crate) fn containers(
    out: &mut impl Write,
    containers: &[rdpull_run::ContainerRecord],
    all: bool,
) -> io::Result<()> {
    writeln!(
        out,
        "{:<14}{:<32}{:<26}STATUS",
        "CONTAINER ID", "IMAGE", "COMMAND"
    )?;
    for c in containers.iter().filter(|c| all || c.status == "running") {
        let mut command = format!("\"{}\"", c.command.join(" "));
        if command.chars().count() > 22 {
            command = format!("{}…\"", command.chars().take(20).collect::<String>());
        }
        let status = match (c.exit_code, c.status.as_str()) {
            (Some(code), _) => format!("Exited ({code})"),
            (None, "exited") => "Exited (unknown: rdpull was killed)".into(),
            (None, other) => other.to_string(),
        };
        writeln!(
            out,
            "{:<14}{:<32}{:<26}{status}",
            &c.id[..12],
            c.image,
            command
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        for (n, want) in [
            (0, "0B"),
            (999, "999B"),
            (5012, "5.01kB"),
            (121_400_000, "121MB"),
            (77_830_000, "77.8MB"),
            (2_315_000_000, "2.31GB"),
            (1_000_000, "1MB"),
        ] {
            assert_eq!(human_size(n), want, "{n}");
        }
    }

    #[test]
    fn times_parse_and_read_as_docker_says_them() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            unix_seconds("2023-11-14T23:13:20.123456789+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(unix_seconds("yesterday"), None);
        assert_eq!(ago("1970-01-01T00:00:00Z").split(' ').nth(1), Some("years"));
        assert_eq!(ellipsis("abcdef", 4), "abc…");
        assert_eq!(ellipsis("abc", 4), "abc");
    }

    #[test]
    fn history_truncates_commands_unless_asked_not_to() {
        let long = "/bin/sh -c apt-get update && apt-get install -y ca-certificates curl";
        let rows = [
            HistoryRow {
                created: None,
                created_by: long,
                size: 5012,
                comment: "newest",
            },
            HistoryRow {
                created: None,
                created_by: "short",
                size: 0,
                comment: "",
            },
        ];
        let show = |id: &str, no_trunc: bool| {
            let mut out = Vec::new();
            write_history(&mut out, id, &rows, no_trunc).unwrap();
            String::from_utf8(out).unwrap()
        };
        let id = "0123456789ab";
        assert_eq!(
            show(id, false),
            format!(
                "IMAGE          CREATED         CREATED BY                                        SIZE   COMMENT\n\
                 {id}   N/A             {:<45}   5.01kB   newest\n\
                 <missing>      N/A             short                                               0B   \n",
                format!("{}…", &long[..44])
            )
        );
        let full = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let out = show(&full, true);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1],
            format!("{full}   N/A             {long}   5.01kB   newest")
        );
        assert!(
            lines[2].starts_with(&format!("{:<71}   N/A", "<missing>")),
            "{out}"
        );
    }
}
