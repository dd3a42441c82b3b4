//! Two `pqmls chat` processes with piped stdin: alice (with an in-process store) creates a
//! group and invites bob by his user id, who dials her without a /p2p/ suffix; bob accepts
//! the invitation, they compare safety numbers and exchange messages, and text meant to
//! fool a terminal is shown neutralised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Peer {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn start(name: &'static str, args: &[&str]) -> Peer {
        let mut all = vec!["chat"];
        all.extend_from_slice(args);
        Self::command(name, &all)
    }

    /// Any `pqmls` subcommand, with its output read line by line.
    fn command(name: &'static str, args: &[&str]) -> Peer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pqmls"))
            .env("PQMLS_PASSPHRASE", "a test passphrase")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
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
        Peer {
            name,
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the process to end and checks that it ended well, saying how it ended
    /// otherwise (an exit code, or the signal that ended it).
    fn exited_well(&mut self) {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} ended with {status}", self.name);
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for an output line containing `needle`; returns it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    eprintln!("{} | {l}", self.name);
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "{}: no line with {needle:?} in 20 s; saw:\n{}",
            self.name,
            self.seen.join("\n")
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn two_processes_chat() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut alice = Peer::start(
        "alice",
        &[
            "--name",
            "alice",
            "--data-dir",
            a.to_str().unwrap(),
            "--listen",
            &listen,
            "--store",
        ],
    );
    let addr = alice.expect("listening on /ip4/127.0.0.1/tcp/");
    assert!(addr.contains("/p2p/"), "{addr}");
    let mut bob = Peer::start(
        "bob",
        &[
            "--name",
            "bob",
            "--data-dir",
            b.to_str().unwrap(),
            "--bootstrap",
            &listen,
        ],
    );
    bob.expect("store peers: 1");
    let id = |p: &mut Peer| {
        p.expect("user id: ")
            .trim_start_matches("user id: ")
            .to_owned()
    };
    let (alice_id, bob_id) = (id(&mut alice), id(&mut bob));
    assert_eq!(alice_id.len(), 64);
    assert_ne!(alice_id, bob_id);

    // Invitations are by id (a contact label resolves to one); bob does not know alice
    // yet, so the invitation waits for his consent, showing alice's id.
    alice.say(&format!("/contact bob {bob_id}"));
    alice.expect(&format!("* bob is {bob_id}"));
    alice.say("/create");
    alice.expect("created group");
    alice.say("/invite bob");
    let invitation = bob.expect("* invitation 1 to group");
    assert!(invitation.contains(&alice_id), "{invitation}");
    bob.say("/accept 1");
    bob.expect("joined group");
    bob.expect("(invited by alice [");
    // Both sides compute the same safety number.
    alice.say("/verify bob");
    bob.say(&format!("/verify {alice_id}"));
    alice.expect("it must read the same");
    bob.expect("it must read the same");
    let number = |p: &Peer| {
        let at = p
            .seen
            .iter()
            .position(|l| l.contains("it must read the same"))
            .unwrap();
        p.seen[at - 1].trim().to_owned()
    };
    let (na, nb) = (number(&alice), number(&bob));
    assert_eq!(na, nb);
    assert_eq!(na.split(' ').count(), 12);

    bob.say("hello");
    alice.expect("<bob [");
    alice.expect("]> hello");
    alice.say("hi bob");
    bob.expect("]> hi bob");
    // A message made to look like another line and to set the terminal's title arrives as
    // visible escapes.
    bob.say("x\u{1b}]0;pwned\u{7} <alice> send me your password");
    let line = alice.expect("pwned");
    assert!(
        !line.contains('\u{1b}') && !line.contains('\u{7}'),
        "{line:?}"
    );
    assert!(line.contains("\\u{1b}]0;pwned\\u{7}"), "{line:?}");

    alice.say("/members");
    alice.expect("members of");
    alice.expect(&format!("bob  {bob_id}"));
    alice.expect(&format!("alice (you)  {alice_id}"));
    bob.say("/history");
    bob.expect("<me> hello");
    bob.say("/nonsense");
    bob.expect("unknown command /nonsense");

    alice.say("/quit");
    bob.say("/quit");
    alice.expect("bye");
    bob.expect("bye");
    alice.exited_well();
    bob.exited_well();
}

/// The same two processes over Waku: alice's in-process store is a Waku node (relay, store
/// v3), bob names it by its full address; invitation, consent and messages both ways.
#[test]
fn two_processes_chat_over_waku() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let mut alice = Peer::start(
        "alice",
        &[
            "--name",
            "alice",
            "--data-dir",
            a.to_str().unwrap(),
            "--listen",
            &listen,
            "--store",
            "--waku",
        ],
    );
    alice.expect("over Waku");
    let addr = alice
        .expect("listening on /ip4/127.0.0.1/tcp/")
        .trim_start_matches("listening on ")
        .to_owned();
    assert!(addr.contains("/p2p/"), "{addr}");
    let mut bob = Peer::start(
        "bob",
        &[
            "--name",
            "bob",
            "--data-dir",
            b.to_str().unwrap(),
            "--bootstrap",
            &addr,
            "--waku",
        ],
    );
    bob.expect("over Waku");
    bob.expect("store peers: 1");
    let id = |p: &mut Peer| {
        p.expect("user id: ")
            .trim_start_matches("user id: ")
            .to_owned()
    };
    let (alice_id, bob_id) = (id(&mut alice), id(&mut bob));
    alice.say(&format!("/contact bob {bob_id}"));
    alice.expect(&format!("* bob is {bob_id}"));
    alice.say("/create");
    alice.expect("created group");
    alice.say("/invite bob");
    let invitation = bob.expect("* invitation 1 to group");
    assert!(invitation.contains(&alice_id), "{invitation}");
    bob.say("/accept 1");
    bob.expect("joined group");
    bob.say("hello over waku");
    alice.expect("]> hello over waku");
    alice.say("hi bob");
    bob.expect("]> hi bob");
    alice.say("/quit");
    bob.say("/quit");
    alice.expect("bye");
    bob.expect("bye");
    alice.exited_well();
    bob.exited_well();
}

/// Two chats over Waku with a separate `pqmls node` (relay, store v3, lightpush, filter,
/// peer exchange) as their only store: neither chat runs one.
#[test]
fn two_chats_over_a_pqmls_waku_node() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let node_dir = dir.path().join("node");
    let mut node = Peer::command(
        "node",
        &[
            "node",
            "--data-dir",
            node_dir.to_str().unwrap(),
            "--listen",
            &listen,
        ],
    );
    node.expect("with a store");
    let addr = node
        .expect("listening on /ip4/127.0.0.1/tcp/")
        .trim()
        .trim_start_matches("listening on ")
        .to_owned();
    let (a, b) = (dir.path().join("alice"), dir.path().join("bob"));
    let mut alice = Peer::start(
        "alice",
        &[
            "--name",
            "alice",
            "--data-dir",
            a.to_str().unwrap(),
            "--bootstrap",
            &addr,
            "--waku",
        ],
    );
    let mut bob = Peer::start(
        "bob",
        &[
            "--name",
            "bob",
            "--data-dir",
            b.to_str().unwrap(),
            "--bootstrap",
            &addr,
            "--waku",
        ],
    );
    alice.expect("over Waku");
    bob.expect("over Waku");
    alice.expect("store peers: 1");
    bob.expect("store peers: 1");
    let id = |p: &mut Peer| {
        p.expect("user id: ")
            .trim_start_matches("user id: ")
            .to_owned()
    };
    let (alice_id, bob_id) = (id(&mut alice), id(&mut bob));
    bob.say(&format!("/contact alice {alice_id}"));
    bob.expect(&format!("* alice is {alice_id}"));
    alice.say(&format!("/contact bob {bob_id}"));
    alice.expect(&format!("* bob is {bob_id}"));
    alice.say("/create");
    alice.expect("created group");
    alice.say("/invite bob");
    bob.expect("joined group");
    bob.say("through the node");
    alice.expect("]> through the node");
    alice.say("and back");
    bob.expect("]> and back");
    alice.say("/quit");
    bob.say("/quit");
    alice.expect("bye");
    bob.expect("bye");
    alice.exited_well();
    bob.exited_well();
}
