//! Writes the seed corpora `corpus/<target>/seed-*` deterministically (run after changing
//! an input format; the files are committed):
//!
//! ```sh
//! cargo test --manifest-path fuzz/Cargo.toml --no-default-features --test gen_corpus -- --ignored
//! ```
//!
//! Valid cases (real keys, ciphertexts and signatures, built by the bodies from seeds or
//! written out whole for the raw modes) and edge cases (small-order X25519 and Ed25519
//! points, coefficients at q, wrong labels, over-long contexts, empty input). Every
//! written input is run through its body before it is saved.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: panics are failures.

use pqmls_fuzz::sdk_api::{
    OP_ADVANCE, OP_CREATE, OP_FLOOD, OP_FOREIGN_WELCOME, OP_FORGE_SIGNALS, OP_INJECT_GROUP,
    OP_INJECT_INBOX, OP_INVITE, OP_LEAVE, OP_ONLINE, OP_PLANT, OP_REMOVE, OP_REPLAY, OP_REWRAP,
    OP_SEND, OP_SYNC, OP_UPDATE, Outcome, run,
};
use pqmls_pq::{
    Kem, MlDsa44, MlDsa44Ed25519, MlDsa65, MlDsa65Ed25519, MlDsa87, MlKem768, MlKem1024,
    SignatureScheme, XWing,
};
use sha2::{Digest, Sha512};
use std::path::Path;

/// `n` deterministic pseudorandom bytes for `label`.
fn det(label: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    let mut i = 0u32;
    while out.len() < n {
        out.extend_from_slice(
            &Sha512::new()
                .chain_update(label)
                .chain_update(i.to_le_bytes())
                .finalize(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

fn arr<const N: usize>(label: &str) -> [u8; N] {
    det(label, N).try_into().unwrap()
}

/// A `u16` length prefix and the bytes (the `Reader::var` format).
fn var(bytes: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(bytes.len()).unwrap().to_le_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// One XOR mutation list entry list: `n` then `(pos: u16, mask)` pairs.
fn xors(list: &[(u16, u8)]) -> Vec<u8> {
    let mut out = vec![u8::try_from(list.len()).unwrap()];
    for (pos, mask) in list {
        out.extend_from_slice(&pos.to_le_bytes());
        out.push(*mask);
    }
    out
}

struct Corpus {
    target: &'static str,
    body: pqmls_fuzz::Body,
    entries: Vec<(String, Vec<u8>)>,
}

impl Corpus {
    fn new(target: &'static str) -> Self {
        let (_, body) = pqmls_fuzz::TARGETS
            .iter()
            .find(|(n, _)| *n == target)
            .unwrap();
        Self {
            target,
            body: *body,
            entries: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, parts: &[&[u8]]) {
        let data = parts.concat();
        (self.body)(&data);
        let name = format!("seed-{:03}-{name}", self.entries.len());
        self.entries.push((name, data));
    }

    fn write(self) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(self.target);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
            {
                std::fs::remove_file(path).unwrap();
            }
        }
        let mut total = 0;
        for (name, data) in &self.entries {
            total += data.len();
            std::fs::write(dir.join(name), data).unwrap();
        }
        assert!(
            total < 200 * 1024,
            "{} corpus too big: {total} bytes",
            self.target
        );
        eprintln!(
            "{}: {} files, {total} bytes",
            self.target,
            self.entries.len()
        );
    }
}

fn xwing_decaps() {
    let mut c = Corpus::new("pq_xwing_decaps");
    c.add("empty", &[]);
    for i in 0..3 {
        let seed: [u8; 32] = arr(&format!("xw seed {i}"));
        let eseed: [u8; 64] = arr(&format!("xw eseed {i}"));
        c.add("valid", &[&[1], &seed, &eseed, &[0]]);
        // The same ciphertext given whole (mode 0), so raw mutations start from it.
        let dk = XWing::decapsulation_key_from_seed(&seed).unwrap();
        let (ct, _) = XWing::encapsulate_derand(XWing::encapsulation_key(&dk), &eseed).unwrap();
        c.add("raw-valid", &[&[0], &seed, ct.as_ref(), &[0]]);
    }
    let seed: [u8; 32] = arr("xw seed 0");
    let eseed: [u8; 64] = arr("xw eseed 0");
    c.add("flip-ct-m", &[&[1], &seed, &eseed, &xors(&[(5, 1)])]);
    c.add("flip-ct-x", &[&[1], &seed, &eseed, &xors(&[(1100, 0x80)])]);
    c.add(
        "flip-ct-x-top-bit",
        &[&[1], &seed, &eseed, &xors(&[(1119, 0x80)])],
    );
    c.add(
        "raw-random",
        &[&[0], &seed, &det("xw ct", XWing::CT_LEN), &[0]],
    );
    c.add("raw-ff", &[&[0], &seed, &[0xff; 1120], &[0]]);
    for i in 0..12u8 {
        c.add(
            "small-order-ct-x",
            &[&[2], &seed, &det("xw ct_m", 1088), &[i], &[0]],
        );
    }
    c.write();
}

fn ml_kem_decaps() {
    let mut c = Corpus::new("pq_ml_kem_decaps");
    c.add("empty", &[]);
    for (sel, ct_len) in [(0u8, MlKem768::CT_LEN), (1, MlKem1024::CT_LEN)] {
        for i in 0..2 {
            let seed: [u8; 64] = arr(&format!("mlkem seed {sel} {i}"));
            let m: [u8; 32] = arr(&format!("mlkem m {sel} {i}"));
            c.add("valid", &[&[sel, 1], &seed, &m, &[0]]);
        }
        let seed: [u8; 64] = arr(&format!("mlkem seed {sel} 0"));
        let m: [u8; 32] = arr(&format!("mlkem m {sel} 0"));
        c.add("flip-first", &[&[sel, 1], &seed, &m, &xors(&[(0, 1)])]);
        c.add(
            "flip-last",
            &[
                &[sel, 1],
                &seed,
                &m,
                &xors(&[(u16::try_from(ct_len - 1).unwrap(), 0x80)]),
            ],
        );
        c.add(
            "raw-random",
            &[&[sel, 0], &seed, &det("mlkem ct", ct_len), &[0]],
        );
        c.add("raw-zero", &[&[sel, 0], &seed, &vec![0; ct_len], &[0]]);
        // A real ciphertext for another key: implicit rejection.
        let other: [u8; 64] = arr("mlkem other");
        let ct = if sel == 0 {
            let dk = MlKem768::decapsulation_key_from_seed(&other).unwrap();
            MlKem768::encapsulate_derand(MlKem768::encapsulation_key(&dk), &m)
                .unwrap()
                .0
                .as_ref()
                .to_vec()
        } else {
            let dk = MlKem1024::decapsulation_key_from_seed(&other).unwrap();
            MlKem1024::encapsulate_derand(MlKem1024::encapsulation_key(&dk), &m)
                .unwrap()
                .0
                .as_ref()
                .to_vec()
        };
        c.add("raw-other-key", &[&[sel, 0], &seed, &ct, &[0]]);
    }
    c.write();
}

/// `n` coefficient overwrites `(index, kind, value)`.
fn coeffs(list: &[(u16, u8, u16)]) -> Vec<u8> {
    let mut out = vec![u8::try_from(list.len()).unwrap()];
    for (i, kind, v) in list {
        out.extend_from_slice(&i.to_le_bytes());
        out.push(*kind);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn ml_kem_ek_parse() {
    let mut c = Corpus::new("pq_ml_kem_ek_parse");
    c.add("empty", &[]);
    let m: [u8; 32] = arr("ek m");
    let eseed: [u8; 64] = arr("ek eseed");
    for sel in 0..3u8 {
        let (seed, ek, rnd): (Vec<u8>, Vec<u8>, &[u8]) = match sel {
            0 => {
                let s: [u8; 64] = arr("ek seed 768");
                let dk = MlKem768::decapsulation_key_from_seed(&s).unwrap();
                (
                    s.to_vec(),
                    MlKem768::encapsulation_key(&dk).as_ref().to_vec(),
                    &m,
                )
            }
            1 => {
                let s: [u8; 64] = arr("ek seed 1024");
                let dk = MlKem1024::decapsulation_key_from_seed(&s).unwrap();
                (
                    s.to_vec(),
                    MlKem1024::encapsulation_key(&dk).as_ref().to_vec(),
                    &m,
                )
            }
            _ => {
                let s: [u8; 32] = arr("ek seed xwing");
                let dk = XWing::decapsulation_key_from_seed(&s).unwrap();
                (
                    s.to_vec(),
                    XWing::encapsulation_key(&dk).as_ref().to_vec(),
                    &eseed,
                )
            }
        };
        let xw_tail: &[u8] = if sel == 2 { &[255] } else { &[] };
        c.add("raw-valid", &[&[sel, 0], &ek, rnd]);
        c.add("raw-random", &[&[sel, 0], &det("ek random", ek.len()), rnd]);
        c.add(
            "seed-unchanged",
            &[&[sel, 1], &seed, &coeffs(&[]), xw_tail, rnd],
        );
        // kind 0: 3328 (valid), 1: 3329 = q (invalid), 3: 4095 (invalid), 4: 0.
        c.add(
            "coeff-q-1",
            &[&[sel, 1], &seed, &coeffs(&[(0, 0, 0)]), xw_tail, rnd],
        );
        c.add(
            "coeff-q",
            &[&[sel, 1], &seed, &coeffs(&[(0, 1, 0)]), xw_tail, rnd],
        );
        c.add(
            "coeff-q-odd",
            &[&[sel, 1], &seed, &coeffs(&[(1, 1, 0)]), xw_tail, rnd],
        );
        c.add(
            "coeff-last-4095",
            &[&[sel, 1], &seed, &coeffs(&[(u16::MAX, 3, 0)]), xw_tail, rnd],
        );
        c.add(
            "coeff-zero",
            &[&[sel, 1], &seed, &coeffs(&[(77, 4, 0)]), xw_tail, rnd],
        );
        c.add(
            "coeff-raw",
            &[
                &[sel, 1],
                &seed,
                &coeffs(&[(300, 7, 3400), (301, 7, 12)]),
                xw_tail,
                rnd,
            ],
        );
        let rho_pos = u16::try_from(ek.len() - 1 - if sel == 2 { 32 } else { 0 }).unwrap();
        c.add(
            "flip-rho",
            &[&[sel, 2], &seed, &xors(&[(rho_pos, 0x55)]), rnd],
        );
        c.add("flip-t", &[&[sel, 2], &seed, &xors(&[(1, 0xf0)]), rnd]);
    }
    let seed: [u8; 32] = arr("ek seed xwing");
    for i in 0..12u8 {
        c.add(
            "xwing-small-order-pk-x",
            &[&[2, 1], &seed, &coeffs(&[]), &[i], &eseed],
        );
    }
    c.write();
}

fn ml_dsa_raw<S: SignatureScheme>(c: &mut Corpus, sel: u8) {
    let sk = S::signing_key_from_seed(&arr::<32>(&format!("dsa raw seed {sel}"))).unwrap();
    let (msg, ctx) = (b"raw message".as_slice(), b"raw ctx".as_slice());
    let sig = S::sign_deterministic(&sk, msg, ctx).unwrap();
    c.add(
        "raw-valid",
        &[
            &[sel, 0],
            S::verifying_key(&sk).as_ref(),
            sig.as_ref(),
            &var(ctx),
            msg,
        ],
    );
    c.add(
        "raw-random",
        &[
            &[sel, 0],
            &det("dsa raw", S::VK_LEN + S::SIG_LEN),
            &var(b""),
            b"m",
        ],
    );
}

fn ml_dsa_verify() {
    let mut c = Corpus::new("pq_ml_dsa_verify");
    c.add("empty", &[]);
    for sel in 0..3u8 {
        let seed: [u8; 32] = arr(&format!("dsa seed {sel}"));
        let rnd: [u8; 32] = arr(&format!("dsa rnd {sel}"));
        let signed = |ctx: &[u8], msg: &[u8], rnd: &[u8; 32]| {
            [seed.as_slice(), rnd, &var(ctx), &var(msg)].concat()
        };
        c.add(
            "valid",
            &[&[sel, 1], &signed(b"context", b"message", &rnd), &[0]],
        );
        c.add(
            "valid-empty",
            &[&[sel, 1], &signed(b"", b"", &[0; 32]), &[0]],
        );
        c.add(
            "valid-ctx-255",
            &[
                &[sel, 1],
                &signed(&[7; 255], &det("dsa msg", 1000), &rnd),
                &[0],
            ],
        );
        let base = signed(b"ctx", b"msg", &rnd);
        // One mutation of each kind (see `signed_mutations`): kind, pos, mask.
        for kind in 0..8u8 {
            c.add("mutate", &[&[sel, 1], &base, &[1, kind, 3, 0, 0x01]]);
        }
        c.add(
            "mutate-hint-end",
            &[&[sel, 1], &base, &[1, 1, 0xff, 0xff, 0x01]],
        );
        c.add(
            "ctx-256",
            &[
                &[sel, 1],
                &signed(&[1; 255], b"msg", &rnd),
                &[1, 7, 0, 0, 1],
            ],
        );
        match sel {
            0 => ml_dsa_raw::<MlDsa44>(&mut c, sel),
            1 => ml_dsa_raw::<MlDsa65>(&mut c, sel),
            _ => ml_dsa_raw::<MlDsa87>(&mut c, sel),
        }
    }
    c.write();
}

fn composite_raw<S: SignatureScheme>(c: &mut Corpus, sel: u8) {
    let sk = S::signing_key_from_seed(&arr::<64>(&format!("comp raw seed {sel}"))).unwrap();
    let (msg, ctx) = (b"raw message".as_slice(), b"raw ctx".as_slice());
    let sig = S::sign_deterministic(&sk, msg, ctx).unwrap();
    c.add(
        "raw-valid",
        &[
            &[sel, 0],
            S::verifying_key(&sk).as_ref(),
            sig.as_ref(),
            &var(ctx),
            msg,
        ],
    );
    c.add(
        "raw-random",
        &[
            &[sel, 0],
            &det("comp raw", S::VK_LEN + S::SIG_LEN),
            &var(b""),
            b"m",
        ],
    );
    c.add(
        "raw-ctx-256",
        &[
            &[sel, 0],
            S::verifying_key(&sk).as_ref(),
            sig.as_ref(),
            &var(&[0; 256]),
            msg,
        ],
    );
}

fn composite_verify() {
    let mut c = Corpus::new("pq_composite_verify");
    c.add("empty", &[]);
    for sel in 0..2u8 {
        let seed: [u8; 64] = arr(&format!("comp seed {sel}"));
        let rnd: [u8; 32] = arr(&format!("comp rnd {sel}"));
        let signed =
            |ctx: &[u8], msg: &[u8]| [seed.as_slice(), &rnd, &var(ctx), &var(msg)].concat();
        c.add("valid", &[&[sel, 1], &signed(b"context", b"message"), &[0]]);
        c.add("valid-empty", &[&[sel, 1], &signed(b"", b""), &[0]]);
        c.add(
            "valid-ctx-255",
            &[&[sel, 1], &signed(&[9; 255], b"m"), &[0]],
        );
        let base = signed(b"ctx", b"msg");
        for kind in 0..8u8 {
            c.add("mutate", &[&[sel, 1], &base, &[1, kind, 3, 0, 0x01]]);
        }
        c.add(
            "mutate-ed-s",
            &[&[sel, 1], &base, &[1, 1, 0xff, 0xff, 0x01]],
        );
        for kind in 0..4u8 {
            for i in 0..3u8 {
                if kind < 3 || i < 2 {
                    c.add("ed25519-edge", &[&[sel, 2], &base, &[kind, i]]);
                }
            }
        }
        for kind in 0..4u8 {
            c.add("wrong-domain", &[&[sel, 3], &base, &[kind]]);
        }
        if sel == 0 {
            composite_raw::<MlDsa44Ed25519>(&mut c, sel);
        } else {
            composite_raw::<MlDsa65Ed25519>(&mut c, sel);
        }
    }
    c.write();
}

#[test]
#[ignore = "writes the seed corpora; run by hand"]
fn generate_seed_corpora() {
    xwing_decaps();
    ml_kem_decaps();
    ml_kem_ek_parse();
    ml_dsa_verify();
    composite_verify();
    provider_hpke_open();
    provider_mls_process();
    sdk_api_ops();
}

#[test]
#[ignore = "writes the sdk_api_ops seed corpus only; run by hand"]
fn generate_sdk_api_ops_corpus() {
    sdk_api_ops();
}

// ---------------------------------------------------------------------------------------
// Provider targets
// ---------------------------------------------------------------------------------------

fn provider_hpke_open() {
    use pqmls_fuzz::provider_hpke::{
        FLAG_EXACT_LEN, FLAG_SEAL, FLAG_WRONG_AAD, FLAG_WRONG_INFO, KEMS, eseed_len, recipient,
        selector, suite_of,
    };
    use pqmls_provider::hpke;
    let mut c = Corpus::new("provider_hpke_open");
    c.add("empty", &[]);
    let info = var(b"pqmls-fuzz info");
    let aad = var(b"pqmls-fuzz aad");
    for (k, kem) in KEMS.iter().enumerate() {
        // KDF and AEAD rotate with the KEM, so every one of them is in a valid seed.
        let sel = selector(k, k % 3, k % 3);
        let ikm_e = det(&format!("hpke ikm_e {k}"), eseed_len(*kem));
        let pt = format!("plaintext for {kem:?}").into_bytes();
        let seal = [
            &[sel, FLAG_SEAL | FLAG_EXACT_LEN, 32][..],
            &info,
            &aad,
            &ikm_e,
            &var(&pt),
        ]
        .concat();
        c.add("seal", &[&seal, &[0, 0]]);
        c.add("seal-mutate-enc", &[&seal, &xors(&[(1, 0x01)]), &[0]]);
        c.add("seal-mutate-ct", &[&seal, &[0], &xors(&[(0, 0x80)])]);
        // The same seal, given whole to the open mode.
        let suite = suite_of(sel);
        let (enc, mut ctx) = hpke::setup_base_sender_derand(
            suite,
            &recipient(*kem).public,
            b"pqmls-fuzz info",
            &ikm_e,
        )
        .unwrap();
        let ct = ctx.seal(b"pqmls-fuzz aad", &pt).unwrap();
        let sk = &recipient(*kem).private;
        let mut rx = hpke::setup_base_receiver(suite, &enc, sk, b"pqmls-fuzz info").unwrap();
        assert_eq!(rx.open(b"pqmls-fuzz aad", &ct).unwrap(), pt);
        c.add(
            "open-valid",
            &[&[sel, FLAG_EXACT_LEN, 32], &enc, &var(&ct), &aad, &info],
        );
        c.add(
            "open-var-enc",
            &[&[sel, 0, 32], &var(&enc), &var(&ct), &aad, &info],
        );
    }
    // Export-only, wrong info / aad, free-length ikm_e (wrong for the post-quantum KEMs).
    let x25519 = KEMS
        .iter()
        .position(|k| *k == hpke::Kem::DhKemX25519)
        .unwrap();
    let xwing = KEMS.iter().position(|k| *k == hpke::Kem::XWing).unwrap();
    for k in [x25519, xwing] {
        let ikm_e = det(&format!("hpke ikm_e {k}"), eseed_len(KEMS[k]));
        let body = |sel: u8, flags: u8, ikm: &[u8]| {
            [
                &[sel, flags, 64][..],
                &info,
                &aad,
                ikm,
                &var(b"pt"),
                &[0, 0],
            ]
            .concat()
        };
        c.add(
            "export-only",
            &[&body(selector(k, 1, 3), FLAG_SEAL | FLAG_EXACT_LEN, &ikm_e)],
        );
        c.add(
            "wrong-info",
            &[&body(
                selector(k, 2, 2),
                FLAG_SEAL | FLAG_EXACT_LEN | FLAG_WRONG_INFO,
                &ikm_e,
            )],
        );
        c.add(
            "wrong-aad",
            &[&body(
                selector(k, 0, 1),
                FLAG_SEAL | FLAG_EXACT_LEN | FLAG_WRONG_AAD,
                &ikm_e,
            )],
        );
        c.add(
            "free-ikm",
            &[&body(selector(k, 0, 0), FLAG_SEAL, &var(&ikm_e[..20]))],
        );
    }
    c.write();
}

fn provider_mls_process() {
    use pqmls_fuzz::provider_mls::{
        ALICE, BOB, CAROL, Fixture, MODE_KEY_PACKAGE, MODE_MESSAGE, MODE_WELCOME, Step, process,
    };
    let f = Fixture::get();
    let mut c = Corpus::new("provider_mls_process");
    let mut add = |name: &str, parts: &[&[u8]], expect: &[Step]| {
        let data = parts.concat();
        assert_eq!(process(&data), expect, "seed {name}");
        c.add(name, &[&data]);
    };
    let to = |who: usize| [MODE_MESSAGE + 3 * u8::try_from(who).unwrap()];
    add("empty", &[], &[]);

    let mut alice = f.det_client(ALICE, "seed app");
    let app = alice.send(b"hello bob");
    add(
        "app-alice-to-bob",
        &[&to(BOB), &app],
        &[Step::Application(b"hello bob".to_vec())],
    );
    let mut bob = f.det_client(BOB, "seed app bob");
    let app = bob.send(b"hello alice");
    add(
        "app-bob-to-alice",
        &[&to(ALICE), &app],
        &[Step::Application(b"hello alice".to_vec())],
    );

    let mut alice = f.det_client(ALICE, "seed update");
    let commit = alice.self_update();
    let app = alice.send(b"after update");
    add("commit-update", &[&to(BOB), &commit], &[Step::Commit]);
    add(
        "commit-update-then-app",
        &[&to(CAROL), &commit, &app],
        &[Step::Commit, Step::Application(b"after update".to_vec())],
    );

    let mut alice = f.det_client(ALICE, "seed add");
    let (commit, welcome) = alice.add(std::slice::from_ref(&f.dave_key_package));
    let app = alice.send(b"welcome dave");
    add("commit-add", &[&to(BOB), &commit], &[Step::Commit]);
    add(
        "welcome-then-app",
        &[&[MODE_WELCOME], &welcome, &app],
        &[Step::Joined, Step::Application(b"welcome dave".to_vec())],
    );

    let mut alice = f.det_client(ALICE, "seed remove");
    let bob_leaf = alice
        .group
        .as_ref()
        .unwrap()
        .members()
        .nth(BOB)
        .unwrap()
        .index
        .u32();
    let carol_leaf = alice
        .group
        .as_ref()
        .unwrap()
        .members()
        .nth(CAROL)
        .unwrap()
        .index
        .u32();
    let commit = alice.remove(&[carol_leaf]);
    add("commit-remove", &[&to(BOB), &commit], &[Step::Commit]);
    let mut alice = f.det_client(ALICE, "seed remove bob");
    let commit = alice.remove(&[bob_leaf]);
    add(
        "commit-remove-receiver",
        &[&to(BOB), &commit],
        &[Step::Commit],
    );

    // Carol proposes adding dave, alice commits it: bob sees both; dave joins.
    let mut carol = f.det_client(CAROL, "seed proposal");
    let proposal = carol.propose_add(&f.dave_key_package);
    let mut alice = f.det_client(ALICE, "seed proposal commit");
    assert_eq!(
        alice.process(pqmls_fuzz::provider_mls::message_in(&proposal)),
        Ok(Step::Proposal)
    );
    let (commit, welcome) = alice.commit_pending();
    add(
        "proposal-then-commit",
        &[&to(BOB), &proposal, &commit],
        &[Step::Proposal, Step::Commit],
    );
    add(
        "welcome-after-proposal",
        &[&[MODE_WELCOME], &welcome],
        &[Step::Joined],
    );

    // KeyPackages for alice to add: dave's (who then joins) and a stranger's.
    add(
        "key-package-dave",
        &[&[MODE_KEY_PACKAGE], &f.dave_key_package],
        &[Step::Added],
    );
    let mut eve = Fixture::stranger("seed eve");
    let kp = eve.key_package();
    add(
        "key-package-eve",
        &[&[MODE_KEY_PACKAGE], &kp],
        &[Step::Added],
    );
    c.write();
}

// ---------------------------------------------------------------------------------------
// SDK target
// ---------------------------------------------------------------------------------------

/// Builds `sdk_api_ops` inputs (format in `src/sdk_api.rs`).
struct Ops(Vec<u8>);

impl Ops {
    /// Loss rate (percent, < 31) and network seed.
    fn new(loss: u8, seed: u8) -> Self {
        Ops(vec![loss, seed])
    }
    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn create(self, x: u8) -> Self {
        self.op(&[OP_CREATE, x])
    }
    fn invite(self, x: u8, user: u8, g: u8) -> Self {
        self.op(&[OP_INVITE, x, user, g])
    }
    fn send(self, x: u8, g: u8, mode: u8, body: &[u8]) -> Self {
        self.op(&[OP_SEND, x, g, mode]).op(&var(body))
    }
    fn update(self, x: u8, g: u8) -> Self {
        self.op(&[OP_UPDATE, x, g])
    }
    fn remove(self, x: u8, user: u8, g: u8) -> Self {
        self.op(&[OP_REMOVE, x, user, g])
    }
    fn leave(self, x: u8, g: u8) -> Self {
        self.op(&[OP_LEAVE, x, g])
    }
    fn sync(self, x: u8) -> Self {
        self.op(&[OP_SYNC, x])
    }
    /// `(n + 1) * 5` ms.
    fn advance(self, n: u8) -> Self {
        self.op(&[OP_ADVANCE, n])
    }
    fn inject_group(self, g: u8, payload: &[u8]) -> Self {
        self.op(&[OP_INJECT_GROUP, g]).op(&var(payload))
    }
    fn inject_inbox(self, user: u8, payload: &[u8]) -> Self {
        self.op(&[OP_INJECT_INBOX, user]).op(&var(payload))
    }
    fn online(self, x: u8, on: bool) -> Self {
        self.op(&[OP_ONLINE, x, u8::from(on)])
    }
    fn replay(self, from: u8, k: u8, to: u8, list: &[(u16, u8)]) -> Self {
        self.op(&[OP_REPLAY, from, k, to]).op(&xors(list))
    }
    fn foreign_welcome(self, g: u8, user: u8) -> Self {
        self.op(&[OP_FOREIGN_WELCOME, g, user])
    }
    fn forge(self, g: u8, k: u8, tag: u8) -> Self {
        self.op(&[OP_FORGE_SIGNALS, g, k, tag])
    }
    fn rewrap(self, from: u8, k: u8, how: u8) -> Self {
        self.op(&[OP_REWRAP, from, k, how])
    }
    fn plant(self, user: u8, slot: u8) -> Self {
        self.op(&[OP_PLANT, user, slot])
    }
    fn flood(self, g: u8, n: u8) -> Self {
        self.op(&[OP_FLOOD, g, n])
    }
    /// a creates group 0 and invites b and c, waiting for each to join.
    fn trio(self) -> Self {
        self.create(A)
            .invite(A, B, 0)
            .advance(60)
            .invite(A, C, 0)
            .advance(60)
    }
}

const A: u8 = 0;
const B: u8 = 1;
const C: u8 = 2;
/// The id nobody has, in the users an operation picks from.
const ZED: u8 = 3;

/// A postcard `Wire` payload: variant `tag`, then `prefix` (the auth tag of an
/// application message), then `mls` as a length-prefixed byte string.
fn wire(tag: u8, prefix: &[u8], mls: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(prefix);
    let mut n = mls.len();
    loop {
        let b = u8::try_from(n & 0x7f).unwrap();
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(mls);
    out
}

fn sdk_api_ops() {
    let mut c = Corpus::new("sdk_api_ops");
    let mut add = |name: &str, ops: Ops, check: &dyn Fn(&Outcome)| {
        let outcome = run(&ops.0);
        check(&outcome);
        c.add(name, &[&ops.0]);
    };
    let none = &|_: &Outcome| {};
    let trio_formed = &|o: &Outcome| {
        assert_eq!(o.groups.first(), Some(&Some((3, 2))), "{o:?}");
    };
    add("empty", Ops::new(0, 0), none);
    add("create", Ops::new(0, 0).create(A), &|o: &Outcome| {
        assert_eq!(o.groups, [Some((1, 0))])
    });
    add("trio", Ops::new(0, 1).trio(), trio_formed);
    add(
        "life-cycle",
        Ops::new(0, 2)
            .trio()
            .send(A, 0, 0, b"hi all")
            .send(C, 0, 1, b"hi from c")
            .advance(40)
            .update(B, 0)
            .advance(40)
            .remove(A, C, 0)
            .advance(40)
            .leave(B, 0)
            .advance(100),
        &|o: &Outcome| assert_eq!(o.groups.first().unwrap().unwrap().0, 1, "{o:?}"),
    );
    // Concurrent commits by all three (updates, then a removal) without loss:
    // regressions/sdk_api_ops/concurrent-updates-stale-own-candidate.
    add(
        "concurrent-commits-lossy",
        Ops::new(5, 3)
            .trio()
            .update(A, 0)
            .update(B, 0)
            .update(C, 0)
            .invite(B, ZED, 0)
            .remove(C, A, 0)
            .advance(100),
        none,
    );
    add(
        "bad-arguments",
        Ops::new(0, 4)
            .invite(A, B, 0)
            .send(A, 0, 0, b"no group")
            .create(A)
            .invite(A, ZED, 0)
            .invite(A, A, 0)
            .invite(A, B, 1)
            .remove(A, B, 0)
            .remove(A, ZED, 0)
            .update(B, 0)
            .leave(C, 0)
            .leave(A, 1)
            .send(B, 0, 0, b"not a member"),
        &|o: &Outcome| assert_eq!(o.groups, [Some((1, 0))]),
    );
    add(
        "send-sizes",
        Ops::new(0, 5)
            .create(A)
            .invite(A, B, 0)
            .advance(60)
            .send(A, 0, 0, b"")
            .send(A, 0, 2, b"max")
            .send(B, 0, 3, b"over")
            .send(B, 0, 1, &[0xff; 1024])
            .advance(40),
        none,
    );
    add(
        "offline-member",
        Ops::new(0, 6)
            .trio()
            .online(C, false)
            .update(A, 0)
            .advance(40)
            .send(B, 0, 0, b"c misses this")
            .sync(C)
            .update(C, 0)
            .advance(40)
            .online(C, true)
            .sync(C)
            .advance(40),
        &|o: &Outcome| assert_eq!(o.groups.first().unwrap().unwrap().0, 3, "{o:?}"),
    );
    add(
        "offline-invitee",
        Ops::new(0, 7)
            .create(A)
            .online(B, false)
            .invite(A, B, 0)
            .advance(100)
            .online(B, true)
            .sync(B)
            .advance(40),
        &|o: &Outcome| assert_eq!(o.groups, [Some((2, 1))], "{o:?}"),
    );
    add(
        "inject-garbage",
        Ops::new(0, 8)
            .trio()
            .inject_group(0, b"")
            .inject_group(0, &det("sdk garbage", 300))
            .inject_group(0, &wire(0, &[0; 32], &det("sdk handshake", 200)))
            .inject_group(0, &wire(1, &[7; 16], &det("sdk application", 200)))
            .inject_group(0, &wire(2, &[], &det("sdk welcome", 200)))
            .inject_inbox(B, &wire(2, &[], &det("sdk welcome 2", 200)))
            .inject_inbox(ZED, &det("sdk garbage 2", 50))
            .inject_group(1, &wire(0, &[0; 32], b""))
            .send(A, 0, 0, b"still works")
            .advance(40),
        trio_formed,
    );
    add(
        "replay-mutated",
        Ops::new(0, 9)
            .trio()
            .send(B, 0, 0, b"to be replayed")
            .update(C, 0)
            .advance(40)
            // Group 0's history: commits, the message, the update. Welcomes in the
            // inboxes (topics 1, 2, 3 = inboxes of a, b, c).
            .replay(0, 0, 0, &[(0, 1)])
            .replay(0, 1, 0, &[(1, 0x80)])
            .replay(0, 2, 0, &[(40, 0x01), (100, 0x10)])
            .replay(0, 3, 0, &[(2, 0xff)])
            .replay(0, 2, 2, &[])
            .replay(2, 0, 3, &[])
            .replay(3, 0, 2, &[(500, 4)])
            .advance(40),
        none,
    );
    add(
        "outsider-takeover",
        Ops::new(0, 12)
            .trio()
            .send(B, 0, 0, b"recent")
            .foreign_welcome(0, B)
            .forge(0, 0, 0x55)
            .forge(0, 1, 0x66)
            .advance(100)
            .send(B, 0, 0, b"after")
            .advance(40),
        trio_formed,
    );
    add(
        "rewrap-and-plant",
        Ops::new(0, 13)
            .plant(C, 0)
            .plant(C, 4)
            .create(A)
            .invite(A, B, 0)
            .advance(60)
            .update(B, 0)
            .rewrap(0, 1, 0)
            .rewrap(0, 1, 1)
            .rewrap(0, 2, 2)
            .advance(40)
            .invite(A, C, 0)
            .advance(60),
        none,
    );
    add(
        "flood",
        Ops::new(0, 14)
            .trio()
            .flood(0, 40)
            .send(A, 0, 0, b"through")
            .update(C, 0)
            .advance(100),
        none,
    );
    add(
        "lossy",
        Ops::new(20, 10)
            .trio()
            .send(A, 0, 0, b"lossy")
            .update(B, 0)
            .update(C, 0)
            .advance(40)
            .send(C, 0, 0, b"after")
            .remove(B, A, 0)
            .advance(100),
        none,
    );
    add(
        "two-groups",
        Ops::new(0, 11)
            .trio()
            .create(B)
            .invite(B, C, 1)
            .advance(60)
            .send(C, 1, 0, b"second group")
            .remove(B, C, 1)
            .invite(B, C, 1)
            .sync(A)
            .sync(B)
            .sync(C)
            .advance(60),
        none,
    );
    c.write();
}
