//! The `pqmls` binary end to end: demo, sim, keygen + info, bad arguments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn pqmls(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pqmls"))
        .env("PQMLS_PASSPHRASE", "a test passphrase")
        .args(args)
        .output()
        .expect("the pqmls binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn demo_with_three_clients_prints_the_table() {
    let o = pqmls(&["demo", "--clients", "3"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "demo failed:\n{out}\n{err}");
    for needle in [
        "competing commits resolved",
        "caught up",
        "| key package",
        "| Welcome",
        "| application message",
        "| concurrent-commit resolution",
        "| total",
        "demo OK",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn demo_over_waku_with_three_clients() {
    let o = pqmls(&["demo", "--waku", "--clients", "3"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "demo failed:\n{out}\n{err}");
    for needle in [
        "over Waku (relay, store v3)",
        "competing commits resolved",
        "caught up",
        "demo OK",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

/// Without loss the scenario must converge and deliver everything (the lossy numbers are
/// measured with the full run, see BENCHMARKS.md).
#[test]
fn a_short_sim_converges() {
    let o = pqmls(&[
        "sim",
        "--trials",
        "2",
        "--members",
        "6",
        "--chaos-secs",
        "5",
        "--loss",
        "0",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "sim failed:\n{out}\n{err}");
    assert!(out.contains("trials converged: 2/2"), "{out}");
    assert!(out.contains("(100.000 %)"), "{out}");
}

#[test]
fn keygen_then_info_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("carol");
    let d = d.to_str().unwrap();
    let o = pqmls(&[
        "keygen",
        "--name",
        "carol",
        "--data-dir",
        d,
        "--suite",
        "0x0051",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("created identity"), "{out}");
    let fp = out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .unwrap()
        .trim()
        .to_owned();

    // Again: the same identity, not a new one.
    let o = pqmls(&[
        "keygen",
        "--name",
        "carol",
        "--data-dir",
        d,
        "--suite",
        "0x0051",
    ]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(
        out.contains("existing identity") && out.contains(&fp),
        "{out}"
    );

    let o = pqmls(&["info", "--data-dir", d]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("carol"), "{out}");
    assert!(out.contains(&fp), "{out}");
    assert!(
        out.contains("MLS_192_MLKEM768_AES256GCM_SHA384_MLDSA65 (0x0051)"),
        "{out}"
    );
    assert!(
        out.contains("0x004f MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519 (default)"),
        "{out}"
    );
    assert!(out.contains("groups: 0"), "{out}");

    // Another name on the same directory is refused.
    let o = pqmls(&[
        "keygen",
        "--name",
        "dave",
        "--data-dir",
        d,
        "--suite",
        "0x0051",
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("belongs to \"carol\""), "{err}");
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (&["demo", "--suite", "0x9999"], "unsupported cipher suite"),
        (&["demo", "--clients", "1"], "--clients"),
        (
            &["sim", "--loss", "1.5"],
            "loss must be a number from 0 to 1",
        ),
        (&["sim", "--trials", "zero"], "--trials"),
        (&["keygen", "--data-dir", "/tmp/x"], "--name"),
        (
            &[
                "keygen",
                "--name",
                "bad name!",
                "--data-dir",
                "/nonexistent/x",
            ],
            "invalid name",
        ),
        (
            &["info", "--data-dir", "/nonexistent/pqmls"],
            "holds no pqmls database",
        ),
        (
            &[
                "chat",
                "--name",
                "a",
                "--data-dir",
                "/tmp/x",
                "--bootstrap",
                "not-an-address",
            ],
            "--bootstrap",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, needle) in cases {
        let o = pqmls(args);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded:\n{out}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in:\n{err}");
    }
}

#[test]
fn help_is_everywhere() {
    for sub in ["demo", "sim", "keygen", "info", "chat"] {
        let o = pqmls(&[sub, "--help"]);
        let (out, _) = text(&o);
        assert!(o.status.success() && out.contains("Usage"), "{sub}: {out}");
    }
    let o = pqmls(&["chat", "--help"]);
    let (out, _) = text(&o);
    assert!(out.contains("--bootstrap /ip4/127.0.0.1/tcp/7001"), "{out}");
}
