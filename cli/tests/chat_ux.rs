//! The chat as a daily tool (issue 12 item 7), one process: a line that is not UTF-8 is
//! reported and the chat goes on; `/history 0` says why it prints nothing; an own message
//! that no peer took is marked queued; Ctrl-C ends the
//! chat at once (it used to print `* bye` and hang until Enter). Also `pqmls --version`,
//! and `pqmls info` into a closed pipe exits cleanly (it used to panic).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read as _, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn pqmls() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pqmls"));
    c.env("PQMLS_PASSPHRASE", "a test passphrase");
    c
}

#[test]
fn chat_survives_bad_input_and_ends_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = pqmls()
        .args(["chat", "--name", "ux", "--data-dir"])
        .arg(dir.path().join("ux"))
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(l) = lines.recv_timeout(Duration::from_millis(100)) {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return;
                }
            }
        }
        panic!("no {needle:?} in:\n{}", seen.join("\n"));
    };
    wait_for("type /help");
    stdin.write_all(b"caf\xe9 is not UTF-8\n").unwrap();
    stdin.flush().unwrap();
    wait_for("not valid UTF-8");
    stdin.write_all(b"/history 0\n").unwrap();
    stdin.flush().unwrap();
    wait_for("positive number");
    stdin.write_all(b"/join 0000\n").unwrap();
    stdin.flush().unwrap();
    wait_for("in no group 0000");
    // With no peer at all, an own message stays queued, and the chat says so.
    stdin.write_all(b"/create\n").unwrap();
    stdin.flush().unwrap();
    wait_for("created group");
    stdin.write_all(b"hello, nobody\n").unwrap();
    stdin.flush().unwrap();
    wait_for("(#1 queued");
    // Ctrl-C, with stdin still open and nothing more typed.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("* bye");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "the chat hangs after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
}

#[test]
fn version_and_info_into_a_closed_pipe() {
    let o = pqmls().arg("--version").output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("pqmls "));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("pipe");
    let o = pqmls()
        .args(["keygen", "--name", "pipe", "--data-dir"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // `pqmls info | head -0`: the reader is gone before anything is written.
    let mut child = pqmls()
        .args(["info", "--data-dir"])
        .arg(&d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.success(), "{status}: {err}");
}
