//! Runs a js-waku scenario script (`tests/js/<package>/<script>.mjs`) with `node` and reads
//! the JSON lines it prints. The scripts need `npm ci` in their package folder first; when
//! `node_modules` is missing the test fails saying so (these tests are `#[ignore]`d, and
//! `.ci/run` installs the packages before running them).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one scenario may wait for its next line (js-waku dials, identifies and asks
/// metadata before it is ready; a few seconds are enough on loopback).
pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// The folder of a js package under `tests/js`.
pub fn package_dir(package: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
        .join(package)
}

/// A running scenario script.
pub struct Js {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Js {
    /// Starts `node <script>.mjs '<args as JSON>'` in `tests/js/<package>`.
    ///
    /// Panics, naming the command to run, if the package's `node_modules` is missing.
    pub fn spawn(package: &str, script: &str, args: Value) -> Self {
        let dir = package_dir(package);
        assert!(
            dir.join("node_modules").is_dir(),
            "js-waku is not installed: run `npm ci` in {} (the js-waku interop tests need it; \
             .ci/run does it)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(format!("{script}.mjs"))
            .arg(args.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node (is Node.js installed?): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap();
                // Keep the last 16 KiB: enough to see why a script failed.
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
                if s.len() > 16 * 1024 {
                    let cut = s.len() - 16 * 1024;
                    let cut = (cut..s.len()).find(|i| s.is_char_boundary(*i)).unwrap();
                    s.drain(..cut);
                }
            }
        });
        Self {
            name: format!("{package}/{script}"),
            stdin: child.stdin.take(),
            child,
            lines: BufReader::new(stdout).lines(),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next JSON line, within [`LINE_TIMEOUT`]. Panics on a `fail` line, on the end of
    /// output and on a line that is not JSON.
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(LINE_TIMEOUT, self.lines.next_line()).await;
        let line = match line {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!(
                "{}: output ended early; stderr:\n{}",
                self.name,
                self.stderr()
            ),
            Ok(Err(e)) => panic!("{}: reading output: {e}", self.name),
            Err(_) => panic!(
                "{}: no line within {LINE_TIMEOUT:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
        };
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", self.name));
        if std::env::var_os("PQMLS_JS_VERBOSE").is_some() {
            eprintln!("{}: {line}", self.name);
        }
        if v["event"] == "fail" {
            panic!(
                "{} failed: {}\nstderr:\n{}",
                self.name,
                v["reason"].as_str().unwrap_or("?"),
                self.stderr()
            );
        }
        v
    }

    /// Reads lines until one whose `event` is `event`, and returns it.
    pub async fn expect(&mut self, event: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["event"] == event {
                return v;
            }
        }
    }

    /// Writes one command line on the script's stdin.
    pub async fn send(&mut self, command: Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Waits for `done` and a zero exit status.
    pub async fn finish(mut self) {
        self.expect("done").await;
        let status = tokio::time::timeout(LINE_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: did not exit", self.name))
            .unwrap();
        assert!(
            status.success(),
            "{}: exit status {status}; stderr:\n{}",
            self.name,
            self.stderr()
        );
    }
}
