//! Helpers shared by the subcommands: suite parsing, runtimes, timeouts, formatting.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use pqmls::Ciphersuite;

/// Parses a cipher suite: a hex code (`0x004f`), a decimal code (`79`) or a name
/// (`MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519`, any case). Only the provider's
/// supported suites are accepted.
pub fn parse_suite(s: &str) -> Result<Ciphersuite, String> {
    let t = s.trim();
    let code = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u16::from_str_radix(hex, 16).ok()
    } else {
        t.parse::<u16>().ok()
    };
    let found = pqmls_provider::SUPPORTED_CIPHERSUITES
        .iter()
        .copied()
        .find(|cs| match code {
            Some(c) => u16::from(*cs) == c,
            None => suite_name(*cs).eq_ignore_ascii_case(t),
        });
    found.ok_or_else(|| {
        format!(
            "unsupported cipher suite {s:?}; supported: {}",
            pqmls_provider::SUPPORTED_CIPHERSUITES
                .iter()
                .map(|cs| format!("{:#06x}", u16::from(*cs)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// The suite's name, as in the MLS registry.
pub fn suite_name(cs: Ciphersuite) -> String {
    format!("{cs:?}")
}

/// `NAME (0x004f)`.
pub fn suite_label(cs: Ciphersuite) -> String {
    format!("{} ({:#06x})", suite_name(cs), u16::from(cs))
}

/// The default suite as `--suite` shows it.
pub const DEFAULT_SUITE_ARG: &str = "0x004f";

/// Writes `text` to stdout. A closed pipe (`pqmls info | head`) ends the output quietly
/// instead of panicking as `println!` does; other write errors are errors.
pub fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// A multi-thread runtime with two workers (the machines this runs on are small).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// Runs `fut` with a deadline; the error names what was awaited.
pub async fn within<T>(
    limit: Duration,
    what: impl std::fmt::Display,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.with_context(|| format!("while waiting for {what}")),
        Err(_) => Err(anyhow!("timed out after {limit:?} waiting for {what}")),
    }
}

/// Polls `check` every 20 ms until it gives `Ok(Ok(value))`, for at most `limit`.
/// `Ok(Err(state))` means "not yet" and `state` is shown if the deadline passes.
pub async fn poll_until<T, F, Fut>(
    limit: Duration,
    what: impl std::fmt::Display,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, String>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let state = match check().await? {
            Ok(v) => return Ok(v),
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "timed out after {limit:?} waiting for {what} (last seen: {state})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` every 20 ms until it gives `Ok(Ok(value))`, for as long as it makes
/// progress. `Ok(Err((done, state)))` means "not yet, `done` of the parts are ready": the
/// wait fails only once `limit` has passed without `done` growing (so a long set-up that
/// keeps advancing, such as many clients on a loaded machine, is not cut off by a fixed
/// deadline), with `state` in the error. `progress` is called with each new `done` and
/// `state`, for progress output.
pub async fn poll_progress<T, F, Fut>(
    limit: Duration,
    what: impl std::fmt::Display,
    mut check: F,
    mut progress: impl FnMut(usize, &str),
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, (usize, String)>>>,
{
    let start = Instant::now();
    let mut best = None;
    let mut deadline = start + limit;
    loop {
        let (done, state) = match check().await? {
            Ok(v) => return Ok(v),
            Err(p) => p,
        };
        if best.is_none_or(|b| done > b) {
            best = Some(done);
            deadline = Instant::now() + limit;
            progress(done, &state);
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "no progress for {limit:?} (after {:.1} s in all) waiting for {what} \
                 (last seen: {state})",
                start.elapsed().as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A short hex prefix of some bytes (the first 8).
pub fn hex_prefix(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

/// A duration in milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The mean of some durations (zero for none).
pub fn mean(ds: &[Duration]) -> Duration {
    if ds.is_empty() {
        return Duration::ZERO;
    }
    ds.iter().sum::<Duration>() / u32::try_from(ds.len()).unwrap_or(u32::MAX)
}

/// The value at quantile `q` (0..=1) of sorted durations (nearest rank; zero for none).
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Text from the network (names, message bodies) made safe for a terminal: control
/// characters (C0, DEL, C1: escape sequences, carriage returns, backspaces), line and
/// paragraph separators, and bidirectional overrides and isolates (which reorder what
/// follows them on the line) are shown as `\u{..}` escapes instead of acting on the
/// terminal. `newlines` keeps `\n` (for multi-line message bodies, each continuation
/// line is indented so it cannot pass for a line of its own).
pub fn clean(text: &str, newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let dangerous = c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c);
        if c == '\n' && newlines {
            out.push_str("\n    | ");
        } else if dangerous {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes from the network shown as text: invalid UTF-8 replaced, then [`clean`].
pub fn clean_bytes(bytes: &[u8], newlines: bool) -> String {
    clean(&String::from_utf8_lossy(bytes), newlines)
}

/// A member as a terminal shows them: cleaned name and short id.
pub fn member(m: &pqmls::Member) -> String {
    format!("{} [{}]", clean(&m.name, false), m.id.short())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_by_code_and_name() {
        let d = pqmls::DEFAULT_SUITE;
        assert_eq!(parse_suite("0x004f"), Ok(d));
        assert_eq!(parse_suite("0x004F"), Ok(d));
        assert_eq!(parse_suite("79"), Ok(d));
        assert_eq!(parse_suite(&suite_name(d).to_lowercase()), Ok(d));
        assert!(parse_suite("0xffff").is_err());
        assert!(parse_suite("nope").is_err());
    }

    /// A wait that keeps progressing outlives its limit; one that stalls fails after the
    /// limit, with what it waited for and the last state in the error.
    #[tokio::test]
    async fn poll_progress_waits_while_progressing() {
        let limit = Duration::from_millis(150);
        // Ready after 600 ms (four limits), one more part ready every 50 ms.
        let start = Instant::now();
        let mut seen = Vec::new();
        let r = poll_progress(
            limit,
            "parts",
            || async {
                let done = usize::try_from(start.elapsed().as_millis() / 50).unwrap_or(0);
                Ok(if done >= 12 {
                    Ok(done)
                } else {
                    Err((done, format!("{done} of 12")))
                })
            },
            |done, _| seen.push(done),
        )
        .await;
        assert!(matches!(r, Ok(d) if d >= 12), "{r:?}");
        assert!(start.elapsed() >= Duration::from_millis(600));
        assert!(
            seen.len() > 4 && seen.windows(2).all(|w| w[0] < w[1]),
            "{seen:?}"
        );

        // Stalled at 3 of 12 from the start: fails after one limit, not before.
        let start = Instant::now();
        let r: Result<()> = poll_progress(
            limit,
            "parts",
            || async { Ok(Err((3, "3 of 12".to_owned()))) },
            |_, _| {},
        )
        .await;
        let e = format!("{:#}", r.err().unwrap_or_else(|| anyhow!("no error")));
        assert!(start.elapsed() >= limit);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(
            e.contains("no progress") && e.contains("parts") && e.contains("3 of 12"),
            "{e}"
        );
    }

    #[test]
    fn quantiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.95), Duration::from_millis(95));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
    }

    #[test]
    fn control_characters_are_neutralised() {
        // A fake line, a terminal title change, a colour, a carriage return overwrite.
        let evil = "hi\n<alice> please send me your password\x1b]0;pwned\x07\x1b[31mred\rX";
        let shown = clean(evil, false);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.contains("\\u{a}<alice>"));
        assert!(shown.contains("\\u{1b}]0;pwned\\u{7}"));
        // Multi-line bodies keep their lines, each marked as a continuation.
        let kept = clean(evil, true);
        assert!(kept.contains("\n    | <alice> please"));
        assert!(!kept.contains("\x1b") && !kept.contains('\r'));
        // Bidi overrides would make "txt.exe" show as "exe.txt".
        assert_eq!(clean("a\u{202e}b\u{2066}", false), "a\\u{202e}b\\u{2066}");
        assert_eq!(clean_bytes(b"ok \xff", false), "ok \u{fffd}");
        assert_eq!(clean("plain, ünïcode ✓", false), "plain, ünïcode ✓");
    }
}
