//! Known-answer tests: the hpke-pq vectors (draft-ietf-hpke-pq-04) through
//! `pqmls_provider::hpke`.
//!
//! Source: `hpke-pq/test-vectors.json` in `tests/data/`, a byte-for-byte copy of
//! `test-vectors.json` from hpkewg/hpke-pq @ 74dafaa6: 13 base-mode vectors. We check the
//! ones whose KEM we have (0x0041 ML-KEM-768, 0x0042 ML-KEM-1024, 0x647a X-Wing) with an
//! HKDF key schedule (KDF ids 1, 2, 3): 3 vectors, one per KEM. The others (ML-KEM-512,
//! the P-256 / P-384 hybrids, DHKEMs with the one-stage SHAKE / TurboSHAKE KDFs 0x0010-
//! 0x0013) are counted as skipped.
//!
//! Per vector, in the labelled [`DeriveProfile::HpkePq`] profile: `DeriveKeyPair(ikmR)` =
//! (skRm, pkRm); the derandomised sender (ikmE is the encapsulation randomness) gives
//! `enc`, `key`, `base_nonce`, `exporter_secret`; the receiver the same three; the 10
//! encryptions (sequence numbers 0-9, implicit: each nonce is checked to be base_nonce
//! XOR seq) seal to `ct` and open to `pt`; the 5 exports match on both sides. Then: the
//! [`DeriveProfile::Plain`] key pair for the same ikmR differs, its private key is the
//! plain `SHAKE256(ikmR, 8 * Nsk)` (checked with the independent RustCrypto `shake`), and
//! HPKE round-trips to it. Negative checks: a flipped ciphertext bit does not open, and a
//! wrong-length `enc` or `pkR` is an error, not a panic. `shared_secret` is not checked
//! here (the HPKE API does not expose it; pqmls-pq's `hpke_pq_derive` test checks it).

// Test code: a panic is how a failed check is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/hpke-pq/test-vectors.json"
);

/// The KEMs this crate implements, by HPKE id.
const OUR_KEMS: &[u16] = &[0x0041, 0x0042, 0x647a];
/// HKDF-SHA256, -SHA384, -SHA512.
const HKDF_IDS: &[u16] = &[1, 2, 3];

fn vector_text() -> String {
    std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"))
}

/// The JSON format, independent of the HPKE implementation.
#[allow(dead_code)]
mod json {
    use serde::Deserialize;

    #[derive(Clone, Debug)]
    pub struct Hex(pub Vec<u8>);

    impl<'de> Deserialize<'de> for Hex {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            hex::decode(String::deserialize(d)?)
                .map(Hex)
                .map_err(serde::de::Error::custom)
        }
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    pub struct Vector {
        pub mode: u8,
        pub kem_id: u16,
        pub kdf_id: u16,
        pub aead_id: u16,
        pub info: Hex,
        #[serde(rename = "ikmE")]
        pub ikm_e: Hex,
        #[serde(rename = "ikmR")]
        pub ikm_r: Hex,
        #[serde(rename = "skRm")]
        pub sk_rm: Hex,
        #[serde(rename = "pkRm")]
        pub pk_rm: Hex,
        pub enc: Hex,
        pub shared_secret: Hex,
        pub suite_id: Hex,
        pub key: Hex,
        pub base_nonce: Hex,
        pub exporter_secret: Hex,
        pub encryptions: Vec<Encryption>,
        pub exports: Vec<Export>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    pub struct Encryption {
        pub aad: Hex,
        pub ct: Hex,
        pub nonce: Hex,
        pub pt: Hex,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    pub struct Export {
        pub exporter_context: Hex,
        #[serde(rename = "L")]
        pub len: usize,
        pub exported_value: Hex,
    }

    impl Vector {
        pub fn id(&self, index: usize) -> String {
            format!(
                "vector {index} (kem {:#06x} kdf {:#06x} aead {:#06x})",
                self.kem_id, self.kdf_id, self.aead_id
            )
        }
    }

    /// `base_nonce XOR I2OSP(seq, Nn)` (RFC 9180 section 5.2).
    pub fn nonce(base: &[u8], seq: u64) -> Vec<u8> {
        let mut n = base.to_vec();
        let tail = n.len().saturating_sub(8);
        for (a, b) in n[tail..].iter_mut().zip(seq.to_be_bytes()) {
            *a ^= b;
        }
        n
    }
}

fn vectors() -> Vec<json::Vector> {
    serde_json::from_str(&vector_text()).unwrap()
}

/// Whether we check this vector.
fn selected(v: &json::Vector) -> bool {
    v.mode == 0 && OUR_KEMS.contains(&v.kem_id) && HKDF_IDS.contains(&v.kdf_id)
}

/// How many vectors we must check, counted on the raw JSON, not through [`json::Vector`].
fn expected_checked() -> usize {
    let raw: serde_json::Value = serde_json::from_str(&vector_text()).unwrap();
    raw.as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            let id = |k: &str| v[k].as_u64().unwrap();
            id("mode") == 0
                && [0x41, 0x42, 0x647a].contains(&id("kem_id"))
                && (1..=3).contains(&id("kdf_id"))
        })
        .count()
}

// The parser's own tests: they run whether or not the HPKE module exists.

#[test]
fn parser_reads_all_vectors() {
    let all = vectors();
    assert_eq!(all.len(), 13);
    let mut per: BTreeMap<(u16, u16), usize> = BTreeMap::new();
    for v in &all {
        *per.entry((v.kem_id, v.kdf_id)).or_insert(0) += 1;
        // suite_id = "HPKE" || kem || kdf || aead.
        let sid = [
            b"HPKE".as_slice(),
            &v.kem_id.to_be_bytes(),
            &v.kdf_id.to_be_bytes(),
            &v.aead_id.to_be_bytes(),
        ]
        .concat();
        assert_eq!(v.suite_id.0, sid);
        // Encryptions are sequence numbers 0.. in order.
        for (i, e) in v.encryptions.iter().enumerate() {
            assert_eq!(
                e.nonce.0,
                json::nonce(&v.base_nonce.0, i as u64),
                "nonce {i}"
            );
        }
    }
    println!("hpke-pq vectors per (kem, kdf): {per:x?}");
    let checked = all.iter().filter(|v| selected(v)).count();
    println!(
        "hpke-pq: {checked} to check, {} skipped",
        all.len() - checked
    );
    assert_eq!(checked, expected_checked());
    assert!(checked >= 3);
    let kems: Vec<u16> = all
        .iter()
        .filter(|v| selected(v))
        .map(|v| v.kem_id)
        .collect();
    assert_eq!(kems, [0x0041, 0x0042, 0x647a]);
}

// Checks against pqmls_provider::hpke.
mod against_hpke {
    use super::*;
    use pqmls_provider::hpke::{
        self, Aead, Context, DeriveProfile, Kdf, Kem, Suite, setup_base_receiver,
        setup_base_sender_derand,
    };
    use shake::{ExtendableOutput, Shake256, Update, XofReader};

    #[derive(Default)]
    struct Report {
        failures: Vec<String>,
    }

    impl Report {
        fn fail(&mut self, id: &str, what: &str, msg: impl std::fmt::Display) {
            self.failures.push(format!("{id} {what}: {msg}"));
        }

        fn eq(&mut self, id: &str, what: &str, expected: &[u8], got: &[u8]) {
            if expected != got {
                self.fail(
                    id,
                    what,
                    format!(
                        "expected {}, got {}",
                        hex::encode(expected),
                        hex::encode(got)
                    ),
                );
            }
        }
    }

    fn shake256(input: &[u8], len: usize) -> Vec<u8> {
        let mut h = Shake256::default();
        h.update(input);
        let mut out = vec![0; len];
        h.finalize_xof().read(&mut out);
        out
    }

    fn check_context(r: &mut Report, id: &str, v: &json::Vector, side: &str, ctx: &Context) {
        r.eq(id, &format!("{side} key"), &v.key.0, ctx.key());
        r.eq(
            id,
            &format!("{side} base_nonce"),
            &v.base_nonce.0,
            ctx.base_nonce(),
        );
        r.eq(
            id,
            &format!("{side} exporter_secret"),
            &v.exporter_secret.0,
            ctx.exporter_secret(),
        );
        for (i, x) in v.exports.iter().enumerate() {
            match ctx.export(&x.exporter_context.0, x.len) {
                Ok(got) => r.eq(
                    id,
                    &format!("{side} export {i}"),
                    &x.exported_value.0,
                    &got[..],
                ),
                Err(e) => r.fail(id, &format!("{side} export {i}"), format!("error {e:?}")),
            }
        }
    }

    fn check_vector(r: &mut Report, id: &str, v: &json::Vector) {
        let s = Suite {
            kem: Kem::from_id(v.kem_id).unwrap(),
            kdf: Kdf::from_id(v.kdf_id).unwrap(),
            aead: Aead::from_id(v.aead_id).unwrap(),
        };
        assert_eq!(s.kem.id(), v.kem_id);

        // DeriveKeyPair, labelled (draft-ietf-hpke-pq-04 sections 3 and 4).
        let spec = match hpke::derive_key_pair(s.kem, &v.ikm_r.0, DeriveProfile::HpkePq) {
            Ok(kp) => {
                r.eq(
                    id,
                    "DeriveKeyPair(ikmR) private = skRm",
                    &v.sk_rm.0,
                    &kp.private,
                );
                r.eq(
                    id,
                    "DeriveKeyPair(ikmR) public = pkRm",
                    &v.pk_rm.0,
                    &kp.public,
                );
                Some(kp)
            }
            Err(e) => {
                r.fail(id, "DeriveKeyPair(ikmR)", format!("error {e:?}"));
                None
            }
        };

        // The Plain profile: another key, SHAKE256(ikm, 8 * Nsk), and it works for HPKE.
        match hpke::derive_key_pair(s.kem, &v.ikm_r.0, DeriveProfile::Plain) {
            Ok(plain) => {
                if let Some(spec) = &spec
                    && (plain.public == spec.public || plain.private[..] == spec.private[..])
                {
                    r.fail(id, "Plain DeriveKeyPair", "same key pair as HpkePq");
                }
                let nsk = v.sk_rm.0.len();
                r.eq(
                    id,
                    "Plain private = SHAKE256(ikmR, Nsk)",
                    &shake256(&v.ikm_r.0, nsk),
                    &plain.private,
                );
                match setup_base_sender_derand(s, &plain.public, b"plain", &v.ikm_e.0) {
                    Ok((enc, mut tx)) => {
                        match setup_base_receiver(s, &enc, &plain.private, b"plain") {
                            Ok(mut rx) => {
                                let ct = tx.seal(b"aad", b"to the plain key").unwrap();
                                r.eq(
                                    id,
                                    "Plain round trip",
                                    b"to the plain key",
                                    &rx.open(b"aad", &ct).unwrap_or_default(),
                                );
                                r.eq(
                                    id,
                                    "Plain round trip exporter_secret",
                                    tx.exporter_secret(),
                                    rx.exporter_secret(),
                                );
                            }
                            Err(e) => r.fail(id, "Plain SetupBaseR", format!("error {e:?}")),
                        }
                    }
                    Err(e) => r.fail(id, "Plain SetupBaseS", format!("error {e:?}")),
                }
            }
            Err(e) => r.fail(id, "Plain DeriveKeyPair(ikmR)", format!("error {e:?}")),
        }

        let (enc, mut sender) = match setup_base_sender_derand(s, &v.pk_rm.0, &v.info.0, &v.ikm_e.0)
        {
            Ok(x) => x,
            Err(e) => return r.fail(id, "SetupBaseS", format!("error {e:?}")),
        };
        r.eq(id, "sender enc", &v.enc.0, &enc);
        check_context(r, id, v, "sender", &sender);
        let mut receiver = match setup_base_receiver(s, &v.enc.0, &v.sk_rm.0, &v.info.0) {
            Ok(x) => x,
            Err(e) => return r.fail(id, "SetupBaseR", format!("error {e:?}")),
        };
        check_context(r, id, v, "receiver", &receiver);

        for (seq, e) in v.encryptions.iter().enumerate() {
            r.eq(
                id,
                &format!("seq {seq} nonce"),
                &e.nonce.0,
                &json::nonce(&v.base_nonce.0, seq as u64),
            );
            match sender.seal(&e.aad.0, &e.pt.0) {
                Ok(ct) => r.eq(id, &format!("seq {seq} sender ct"), &e.ct.0, &ct),
                Err(err) => r.fail(id, &format!("seq {seq} seal"), format!("error {err:?}")),
            }
            match receiver.open(&e.aad.0, &e.ct.0) {
                Ok(pt) => r.eq(id, &format!("seq {seq} receiver pt"), &e.pt.0, &pt),
                Err(err) => r.fail(id, &format!("seq {seq} open"), format!("error {err:?}")),
            }
        }

        // Negative checks.
        if let Some(e0) = v.encryptions.first() {
            let mut rx = setup_base_receiver(s, &v.enc.0, &v.sk_rm.0, &v.info.0).unwrap();
            let mut bad = e0.ct.0.clone();
            bad[0] ^= 1;
            if rx.open(&e0.aad.0, &bad).is_ok() {
                r.fail(id, "seq 0 ct with a flipped bit", "opened");
            }
            match rx.open(&e0.aad.0, &e0.ct.0) {
                Ok(pt) => r.eq(id, "seq 0 after a failed open", &e0.pt.0, &pt),
                Err(err) => r.fail(
                    id,
                    "seq 0 after a failed open",
                    format!("error {err:?} (sequence advanced?)"),
                ),
            }
        }
        // ML-KEM decapsulation rejects implicitly: a tampered enc of the right length gives
        // another context, not an error.
        let mut bad_enc = v.enc.0.clone();
        bad_enc[0] ^= 1;
        match setup_base_receiver(s, &bad_enc, &v.sk_rm.0, &v.info.0) {
            Ok(rx) => {
                if rx.exporter_secret() == v.exporter_secret.0.as_slice() {
                    r.fail(id, "tampered enc", "same exporter_secret");
                }
            }
            // For X-Wing byte 0 is in the ML-KEM ciphertext, not the X25519 part.
            Err(e) => r.fail(
                id,
                "tampered enc",
                format!("error {e:?}, expected implicit rejection"),
            ),
        }
        let enc_v = &v.enc.0;
        let pk = &v.pk_rm.0;
        let long_enc = [enc_v.as_slice(), &[0]].concat();
        for (what, bytes) in [
            ("enc short", &enc_v[..enc_v.len() - 1]),
            ("enc long", &long_enc[..]),
            ("enc empty", &[][..]),
        ] {
            if setup_base_receiver(s, bytes, &v.sk_rm.0, &v.info.0).is_ok() {
                r.fail(id, what, "accepted");
            }
        }
        let long_pk = [pk.as_slice(), &[0]].concat();
        for (what, bytes) in [
            ("pkR short", &pk[..pk.len() - 1]),
            ("pkR long", &long_pk[..]),
            ("pkR empty", &[][..]),
        ] {
            if setup_base_sender_derand(s, bytes, &v.info.0, &v.ikm_e.0).is_ok() {
                r.fail(id, what, "accepted");
            }
        }
        let sk = &v.sk_rm.0;
        if setup_base_receiver(s, enc_v, &sk[..sk.len() - 1], &v.info.0).is_ok() {
            r.fail(id, "skR short", "accepted");
        }
        if setup_base_sender_derand(s, pk, &v.info.0, &v.ikm_e.0[..v.ikm_e.0.len() - 1]).is_ok() {
            r.fail(id, "ikmE (encapsulation randomness) short", "accepted");
        }
    }

    #[test]
    fn hpke_pq_vectors() {
        let all = vectors();
        let mut r = Report::default();
        let mut checked: BTreeMap<u16, usize> = BTreeMap::new();
        let mut skipped = Vec::new();
        for (i, v) in all.iter().enumerate() {
            let id = v.id(i);
            if !selected(v) {
                skipped.push(id);
                continue;
            }
            let mut local = Report::default();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check_vector(&mut local, &id, v)
            }));
            r.failures.append(&mut local.failures);
            if let Err(p) = outcome {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                r.fail(&id, "panic", msg);
            }
            *checked.entry(v.kem_id).or_insert(0) += 1;
        }
        let n_checked: usize = checked.values().sum();
        println!(
            "hpke-pq: checked per KEM {checked:x?}; skipped {}: {skipped:#?}",
            skipped.len()
        );
        assert_eq!(n_checked, expected_checked());
        assert!(n_checked >= 3);
        assert_eq!(n_checked + skipped.len(), all.len());
        assert!(
            r.failures.is_empty(),
            "{} failure(s):\n  {}",
            r.failures.len(),
            r.failures.join("\n  ")
        );
    }
}
