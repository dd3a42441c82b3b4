//! Mixed groups with a member on Logos's MLS stack exactly: OpenMLS 0.8.1 with
//! openmls_libcrux_crypto 0.3.1 (its in-memory storage), cipher suite 0x004D
//! (`MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519`), as Logos's Rust chat core
//! (`logos-messaging/libchat`) runs its groups. The other members are ours (pqmls-provider
//! on OpenMLS 0.9.2). Messages travel as TLS-serialized bytes between the two OpenMLS
//! versions, as they would on the network.
//!
//! Logos's member is a separate process, `interop/logos-member` (its own workspace and lock
//! file): openmls_libcrux_crypto 0.3.1 pins `hax-lib =0.3.6` while pqmls-pq's libcrux-ml-dsa
//! needs `^0.3.7`, so one Cargo graph cannot hold both stacks. The tests are `#[ignore]`d in
//! a plain `cargo test` and run by `.ci/run`, which builds the member first:
//!
//! ```text
//! CARGO_TARGET_DIR=$PWD/target cargo build --manifest-path interop/logos-member/Cargo.toml
//! cargo test --workspace --test provider -- --ignored logos_interop::
//! ```
//!
//! (`PQMLS_LOGOS_MEMBER` may name the binary elsewhere.)
//!
//! Covered, with the group created once by each side: our member joins from Logos's
//! Welcome and Logos's member from ours; application messages both ways; commits (add,
//! self-update, remove) created by either side and processed by the other; epoch
//! authenticators and exporter secrets agree after every step.
//!
//! Then one migration path off 0x004D, which upstream OpenMLS is dropping from its libcrux
//! provider: the same members move to a group on the draft-ietf-mls-pq-ciphersuites suite
//! 0x004F (`MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519`, HPKE KEM 0x647a). Logos's
//! member, once upgraded to OpenMLS 0.9.2 with openmls_libcrux_crypto 0.4 (0.3.1 does not
//! run 0x004F), keeps its identity (credential and Ed25519 key); our member creates the
//! new group and sends the Welcome inside the old group, so that the old group's
//! authentication vouches for the new group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;
use openmls::prelude::Ciphersuite;

/// Logos's member: a `pqmls-logos-member` process.
mod logos {
    use super::common::{Outcome, Peer};
    use std::cell::RefCell;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

    fn binary() -> std::path::PathBuf {
        match std::env::var_os("PQMLS_LOGOS_MEMBER") {
            Some(p) => p.into(),
            None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/debug/pqmls-logos-member"),
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    pub struct Client {
        name: String,
        child: Child,
        /// The member's stdin and stdout (a `RefCell`: `Peer`'s getters take `&self`).
        io: RefCell<(ChildStdin, BufReader<ChildStdout>)>,
    }

    impl Drop for Client {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Client {
        pub fn new(name: &str) -> Self {
            let bin = binary();
            let mut child = Command::new(&bin)
                .arg(name)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {} ({e}); build it with `CARGO_TARGET_DIR=$PWD/target \
                         cargo build --manifest-path interop/logos-member/Cargo.toml`",
                        bin.display()
                    )
                });
            let stdin = child.stdin.take().unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            Client {
                name: name.into(),
                child,
                io: RefCell::new((stdin, stdout)),
            }
        }

        fn try_call(&self, cmd: &str, arg: &str) -> Result<Vec<u8>, String> {
            let mut io = self.io.borrow_mut();
            writeln!(io.0, "{cmd} {arg}").unwrap();
            io.0.flush().unwrap();
            let mut line = String::new();
            io.1.read_line(&mut line).unwrap();
            let line = line.trim_end();
            match line.split_once(' ').unwrap_or((line, "")) {
                ("OK", h) => Ok(unhex(h)),
                (_, e) => Err(e.to_string()),
            }
        }

        fn call(&self, cmd: &str, arg: &str) -> Vec<u8> {
            self.try_call(cmd, arg)
                .unwrap_or_else(|e| panic!("{} (Logos) {cmd}: {e}", self.name))
        }

        fn text(&self, cmd: &str, arg: &str) -> String {
            String::from_utf8(self.call(cmd, arg)).unwrap()
        }

        /// The member's Ed25519 private and public key (to take its identity to an
        /// upgraded stack in the migration test).
        pub fn keys(&self) -> (Vec<u8>, Vec<u8>) {
            let text = self.text("keys", "");
            let (a, b) = text.split_once(',').unwrap();
            (unhex(a), unhex(b))
        }
    }

    impl Peer for Client {
        fn name(&self) -> &str {
            &self.name
        }

        fn provider_name(&self) -> &'static str {
            "openmls 0.8.1 + openmls_libcrux_crypto 0.3.1"
        }

        fn key_package(&mut self) -> Vec<u8> {
            self.call("key_package", "")
        }

        fn create_group(&mut self) {
            self.call("create_group", "");
        }

        fn try_join(&mut self, welcome: &[u8]) -> Result<(), String> {
            self.try_call("join", &hex(welcome)).map(|_| ())
        }

        fn join(&mut self, welcome: &[u8]) {
            self.call("join", &hex(welcome));
        }

        fn add(&mut self, key_packages: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
            let arg: Vec<String> = key_packages.iter().map(|k| hex(k)).collect();
            let text = self.text("add", &arg.join(","));
            let (commit, welcome) = text.split_once(',').unwrap();
            (unhex(commit), unhex(welcome))
        }

        fn self_update(&mut self) -> Vec<u8> {
            self.call("self_update", "")
        }

        fn remove(&mut self, leaves: &[u32]) -> Vec<u8> {
            let arg: Vec<String> = leaves.iter().map(u32::to_string).collect();
            self.call("remove", &arg.join(","))
        }

        fn send(&mut self, msg: &[u8]) -> Vec<u8> {
            self.call("send", &hex(msg))
        }

        fn process(&mut self, msg: &[u8]) -> Outcome {
            let name = self.name.clone();
            self.try_process(msg)
                .unwrap_or_else(|e| panic!("{name} (Logos): {e}"))
        }

        fn try_process(&mut self, msg: &[u8]) -> Result<Outcome, String> {
            let out = String::from_utf8(self.try_call("process", &hex(msg))?).unwrap();
            Ok(match out.as_str() {
                "commit" => Outcome::Commit,
                "removed" => Outcome::Removed,
                "proposal" => Outcome::Proposal,
                app => Outcome::Application(unhex(app.strip_prefix("app:").unwrap())),
            })
        }

        fn epoch(&self) -> u64 {
            self.text("epoch", "").parse().unwrap()
        }

        fn group_id(&self) -> Vec<u8> {
            self.call("group_id", "")
        }

        fn epoch_authenticator(&self) -> Vec<u8> {
            self.call("epoch_authenticator", "")
        }

        fn exporter(&self) -> Vec<u8> {
            self.call("exporter", "")
        }

        fn leaf_index(&self) -> u32 {
            self.text("leaf_index", "").parse().unwrap()
        }

        fn leaf_of(&self, name: &str) -> Option<u32> {
            let t = self.text("leaf_of", &hex(name.as_bytes()));
            (!t.is_empty()).then(|| t.parse().unwrap())
        }

        fn member_count(&self) -> usize {
            self.text("member_count", "").parse().unwrap()
        }

        fn leave_group_state(&mut self) {
            self.call("leave", "");
        }
    }
}

/// Logos's suite, 0x004D.
const SUITE: Ciphersuite = Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519;

/// Members: 0 and 2 ours, 1 and 3 on Logos's stack. `creator` makes the group and adds the
/// rest; everyone talks; everyone commits; removals and re-adds cross the two stacks.
fn mixed(creator: usize) -> Vec<Box<dyn Peer>> {
    let tag = format!("0x004D, creator {creator}");
    let mut all: Vec<Box<dyn Peer>> = vec![
        Box::new(Client::new_ours("us0", our_provider(), SUITE)),
        Box::new(logos::Client::new("logos1")),
        Box::new(Client::new_ours("us2", our_provider(), SUITE)),
        Box::new(logos::Client::new("logos3")),
    ];
    let others: Vec<usize> = (0..4).filter(|i| *i != creator).collect();
    all[creator].create_group();
    let mut members = vec![creator];
    // One commit adds a member of each stack (one Welcome read by both).
    add_round(&mut all, &mut members, creator, &others[..2], &tag);
    chat_round(&mut all, &members.clone(), &tag);
    // The last member is added by the other side.
    let adder = if creator == 0 { 1 } else { 0 };
    add_round(&mut all, &mut members, adder, &others[2..], &tag);
    chat_round(&mut all, &members.clone(), &tag);
    for c in [0, 1, 2, 3] {
        update_round(&mut all, &members.clone(), c, &tag);
    }
    // Logos removes one of ours and we add it back; we remove Logos's and Logos adds it back.
    remove_round(&mut all, &mut members, 1, &[2], &tag);
    add_round(&mut all, &mut members, 0, &[2], &tag);
    remove_round(&mut all, &mut members, 0, &[3], &tag);
    add_round(&mut all, &mut members, 1, &[3], &tag);
    for c in [3, 2, 1, 0] {
        update_round(&mut all, &members.clone(), c, &tag);
    }
    chat_round(&mut all, &members.clone(), &tag);
    all
}

#[test]
#[ignore = "needs interop/logos-member built (see the module docs); .ci/run runs it"]
fn mixed_group_created_by_us() {
    mixed(0);
}

#[test]
#[ignore = "needs interop/logos-member built (see the module docs); .ci/run runs it"]
fn mixed_group_created_by_logos() {
    mixed(1);
}

/// Migration off 0x004D: a group of us and a Logos member moves, with the same members and
/// identities, to a 0x004F group. The Welcome for the new group goes through the old group.
#[test]
#[ignore = "needs interop/logos-member built (see the module docs); .ci/run runs it"]
fn migration_from_0x004d_to_0x004f() {
    const NEW: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;
    // The old group: us0 (creator) and logos1.
    let mut us = Client::new_ours("us0", our_provider(), SUITE);
    let mut logos = logos::Client::new("logos1");
    us.create_group();
    let (commit, welcome) = us.add(&[logos.key_package()]);
    drop(commit);
    logos.join(&welcome);
    assert_eq!(us.epoch_authenticator(), logos.epoch_authenticator());

    // Logos's member upgrades its stack (OpenMLS 0.9.2 + openmls_libcrux_crypto 0.4, which
    // run 0x004F), keeping its credential and Ed25519 key.
    let (private, public) = logos.keys();
    let upgraded_provider = openmls_libcrux_crypto::Provider::new().unwrap();
    let signer = ClientSigner::Raw {
        scheme: openmls::prelude::SignatureScheme::ED25519,
        private,
        public: public.clone(),
    };
    let mut upgraded = Client::with_signer(
        "logos1",
        "openmls 0.9.2 + openmls_libcrux_crypto 0.4",
        upgraded_provider,
        NEW,
        signer,
        public.clone(),
    );
    // It hands us a 0x004F key package over the old group (authenticated by it).
    let kp = upgraded.key_package();
    let carried = logos.send(&kp);
    let Outcome::Application(kp_received) = us.process(&carried) else {
        panic!("expected the key package as an application message")
    };

    // We open the new group on 0x004F with the same members; the Welcome goes back over
    // the old group.
    let mut us_new = Client::new_ours("us0", our_provider(), NEW);
    // Same identity on our side too: the signature key of the old group.
    us_new.signer = match &us.signer {
        ClientSigner::Ours(kp) => ClientSigner::Ours(
            pqmls_provider::SignatureKeyPair::from_seed(kp.scheme(), kp.seed()).unwrap(),
        ),
        ClientSigner::Raw { .. } => unreachable!("our client signs with our key pair"),
    };
    us_new.credential = us.credential.clone();
    us_new.create_group();
    let (_, welcome_new) = us_new.add(&[kp_received]);
    let carried = us.send(&welcome_new);
    let Outcome::Application(welcome_received) = logos.process(&carried) else {
        panic!("expected the Welcome as an application message")
    };
    upgraded.join(&welcome_received);

    // The new group: same members, same signature keys, working both ways.
    assert_eq!(u16::from(upgraded.group().ciphersuite()), 0x004F);
    assert_eq!(us_new.group_id(), upgraded.group_id());
    let keys = |g: &openmls::prelude::MlsGroup| {
        let mut k: Vec<Vec<u8>> = g.members().map(|m| m.signature_key).collect();
        k.sort();
        k
    };
    let mut old_keys = vec![public, us.credential.signature_key.as_slice().to_vec()];
    old_keys.sort();
    assert_eq!(keys(us_new.group()), old_keys);
    assert_eq!(keys(upgraded.group()), old_keys);
    let mut all: Vec<Box<dyn Peer>> = vec![Box::new(us_new), Box::new(upgraded)];
    let members = [0, 1];
    chat_round(&mut all, &members, "0x004F after migration");
    update_round(&mut all, &members, 1, "0x004F after migration");
    update_round(&mut all, &members, 0, "0x004F after migration");
    chat_round(&mut all, &members, "0x004F after migration");
}
