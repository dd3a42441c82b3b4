//! Known-answer tests: RFC 9180 appendix A, base mode, through `pqmls_provider::hpke`.
//!
//! Source: `hpke-rfc9180/draft-irtf-cfrg-hpke.md` in `tests/data/`, a byte-for-byte
//! copy of the RFC 9180 source at cfrg/draft-irtf-cfrg-hpke @ b1f7cb0c. Its appendix
//! "Test Vectors" holds the vectors as text: `name: hex` lines inside `~~~` blocks, where a
//! long value wraps onto following lines (sometimes starting on the line after the name).
//! [`text`] parses that; it does not depend on the HPKE API, so its own tests always run.
//!
//! The appendix has 28 setup blocks (7 suites x 4 modes); we check the 7 base-mode
//! (`mode: 0`) ones: DHKEM(X25519) x 3 (AES-128-GCM, ChaCha20Poly1305, export-only),
//! DHKEM(P-256) x 3 (HKDF-SHA256 and HKDF-SHA512 key schedules) and DHKEM(P-521) x 1.
//! RFC 9180 has no vectors for DHKEM(P-384) (0x0011) or DHKEM(X448) (0x0021).
//!
//! Per vector: `DeriveKeyPair(ikmR)` = (skRm, pkRm) and `DeriveKeyPair(ikmE)` = (skEm,
//! pkEm); the derandomised sender gives `enc`, `key`, `base_nonce`, `exporter_secret`; the
//! receiver the same three; every listed encryption is sealed by the sender and opened by
//! the receiver at its sequence number (sequence numbers 0, 1, 2, 4, 255, 256 are listed:
//! the gaps are filled by sealing a dummy message at the sender and opening that at the
//! receiver, so both contexts walk every sequence number); every export matches on both
//! sides. Negative checks: a flipped ciphertext bit does not open (and does not advance
//! the receiver), a wrong-length `enc`, `pkR` or `skR` is an error, not a panic, and the
//! export-only AEAD refuses to seal and open.

// Test code: a panic is how a failed check is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/hpke-rfc9180/draft-irtf-cfrg-hpke.md"
);

fn vector_text() -> String {
    std::fs::read_to_string(VECTORS).unwrap_or_else(|e| panic!("cannot read {VECTORS}: {e}"))
}

/// Base-mode vectors we expect per KEM id: a parser regression cannot check nothing.
const EXPECTED_BASE_PER_KEM: &[(u16, usize)] = &[(0x0010, 3), (0x0012, 1), (0x0020, 3)];

/// The RFC 9180 appendix text format, independent of the HPKE implementation.
mod text {
    use std::collections::BTreeMap;

    /// One setup block with the encryptions and exports that follow it.
    #[derive(Debug)]
    pub struct Vector {
        /// The section heading ("DHKEM(X25519, HKDF-SHA256), ...") and block line, for messages.
        pub section: String,
        pub line: usize,
        pub mode: u8,
        pub kem_id: u16,
        pub kdf_id: u16,
        pub aead_id: u16,
        /// Every other setup field, hex-decoded (`info`, `ikmE`, `pkEm`, ..., `exporter_secret`).
        pub fields: BTreeMap<String, Vec<u8>>,
        pub encryptions: Vec<Encryption>,
        pub exports: Vec<Export>,
    }

    #[derive(Debug)]
    pub struct Encryption {
        pub seq: u64,
        pub pt: Vec<u8>,
        pub aad: Vec<u8>,
        pub nonce: Vec<u8>,
        pub ct: Vec<u8>,
    }

    #[derive(Debug)]
    pub struct Export {
        pub context: Vec<u8>,
        pub len: usize,
        pub value: Vec<u8>,
    }

    impl Vector {
        /// A hex field of the setup block; an error names the vector and the field.
        pub fn field(&self, name: &str) -> Result<&[u8], String> {
            self.fields
                .get(name)
                .map(Vec::as_slice)
                .ok_or_else(|| format!("{}: no field {name}", self.id()))
        }

        /// Where this vector is, for messages.
        pub fn id(&self) -> String {
            format!(
                "[{} mode {} line {}] kem {:#06x} kdf {:#06x} aead {:#06x}",
                self.section, self.mode, self.line, self.kem_id, self.kdf_id, self.aead_id
            )
        }
    }

    /// `name: value` lines of one `~~~` block, values still hex text; wrapped lines joined.
    type Block = Vec<(String, String, usize)>;

    /// The fields every setup block has whatever its mode (PSK / Auth modes add more).
    const SETUP_FIELDS: &[&str] = &[
        "info",
        "ikmE",
        "pkEm",
        "skEm",
        "ikmR",
        "pkRm",
        "skRm",
        "enc",
        "shared_secret",
        "key_schedule_context",
        "secret",
        "key",
        "base_nonce",
        "exporter_secret",
    ];

    fn is_hex(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
    }

    fn hex(name: &str, value: &str, line: usize) -> Result<Vec<u8>, String> {
        hex::decode(value).map_err(|e| format!("line {line}: {name}: bad hex ({e}): {value:?}"))
    }

    fn number<T: std::str::FromStr>(name: &str, value: &str, line: usize) -> Result<T, String> {
        value
            .parse()
            .map_err(|_| format!("line {line}: {name}: not a number: {value:?}"))
    }

    /// Parses every vector of the "Test Vectors" appendix, all modes.
    pub fn parse(text: &str) -> Result<Vec<Vector>, String> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        // Skip to the appendix.
        lines
            .by_ref()
            .find(|(_, l)| l.trim_end() == "# Test Vectors")
            .ok_or("no \"# Test Vectors\" heading")?;

        let mut vectors: Vec<Vector> = Vec::new();
        let mut section = String::new();
        let mut subsection = String::new();
        let mut block: Option<(usize, Block)> = None;
        for (n, line) in lines {
            let line = line.trim_end();
            if line.starts_with("~~~") {
                match block.take() {
                    None => block = Some((n, Vec::new())),
                    Some((start, b)) => {
                        add_block(&mut vectors, &section, &subsection, start, b)?;
                    }
                }
                continue;
            }
            let Some((_, b)) = block.as_mut() else {
                if let Some(h) = line.strip_prefix("## ") {
                    section = h.trim().to_string();
                } else if line.starts_with("###") {
                    subsection = line.trim_start_matches('#').trim().to_string();
                }
                continue;
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim();
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b' ')
                {
                    return Err(format!("line {n}: unexpected {line:?}"));
                }
                b.push((name.to_string(), value.trim().to_string(), n));
            } else if is_hex(line) {
                let Some(last) = b.last_mut() else {
                    return Err(format!(
                        "line {n}: hex continuation with no field before it"
                    ));
                };
                last.1.push_str(line);
            } else {
                return Err(format!("line {n}: unexpected {line:?}"));
            }
        }
        if block.is_some() {
            return Err("unterminated ~~~ block".into());
        }
        Ok(vectors)
    }

    fn add_block(
        vectors: &mut Vec<Vector>,
        section: &str,
        subsection: &str,
        start: usize,
        b: Block,
    ) -> Result<(), String> {
        let Some((first, _, _)) = b.first() else {
            return Err(format!("line {start}: empty block"));
        };
        match first.as_str() {
            "mode" => vectors.push(setup(section, start, b)?),
            "sequence number" => {
                let v = vectors
                    .last_mut()
                    .ok_or(format!("line {start}: encryptions before any setup"))?;
                if !subsection.starts_with("Encryptions") {
                    return Err(format!("line {start}: encryptions under {subsection:?}"));
                }
                v.encryptions = records(&b, "sequence number", start)?
                    .into_iter()
                    .map(|r| {
                        Ok(Encryption {
                            seq: number(
                                "sequence number",
                                r.get("sequence number", start)?,
                                start,
                            )?,
                            pt: hex("pt", r.get("pt", start)?, start)?,
                            aad: hex("aad", r.get("aad", start)?, start)?,
                            nonce: hex("nonce", r.get("nonce", start)?, start)?,
                            ct: hex("ct", r.get("ct", start)?, start)?,
                        })
                    })
                    .collect::<Result<_, String>>()?;
            }
            "exporter_context" => {
                let v = vectors
                    .last_mut()
                    .ok_or(format!("line {start}: exports before any setup"))?;
                if !subsection.starts_with("Exported Values") {
                    return Err(format!("line {start}: exports under {subsection:?}"));
                }
                v.exports = records(&b, "exporter_context", start)?
                    .into_iter()
                    .map(|r| {
                        Ok(Export {
                            context: hex(
                                "exporter_context",
                                r.get("exporter_context", start)?,
                                start,
                            )?,
                            len: number("L", r.get("L", start)?, start)?,
                            value: hex("exported_value", r.get("exported_value", start)?, start)?,
                        })
                    })
                    .collect::<Result<_, String>>()?;
            }
            other => {
                return Err(format!(
                    "line {start}: block starting with unknown field {other:?}"
                ));
            }
        }
        Ok(())
    }

    /// One record's fields, each name at most once.
    struct Record<'a>(BTreeMap<&'a str, &'a str>);

    impl Record<'_> {
        fn get(&self, name: &str, line: usize) -> Result<&str, String> {
            self.0
                .get(name)
                .copied()
                .ok_or_else(|| format!("block at line {line}: record without {name}"))
        }
    }

    /// Splits a block into records, each starting at a `first` field.
    fn records<'a>(b: &'a Block, first: &str, start: usize) -> Result<Vec<Record<'a>>, String> {
        let mut out: Vec<Record<'a>> = Vec::new();
        for (name, value, n) in b {
            if name == first {
                out.push(Record(BTreeMap::new()));
            }
            let r = out
                .last_mut()
                .ok_or(format!("block at line {start}: no {first} first"))?;
            if r.0.insert(name.as_str(), value.as_str()).is_some() {
                return Err(format!("line {n}: {name} twice in one record"));
            }
        }
        Ok(out)
    }

    fn setup(section: &str, start: usize, b: Block) -> Result<Vector, String> {
        let mut ids = BTreeMap::new();
        let mut fields = BTreeMap::new();
        for (name, value, n) in b {
            let dup = match name.as_str() {
                "mode" | "kem_id" | "kdf_id" | "aead_id" => ids
                    .insert(name.clone(), number::<u16>(&name, &value, n)?)
                    .is_some(),
                _ => fields
                    .insert(name.clone(), hex(&name, &value, n)?)
                    .is_some(),
            };
            if dup {
                return Err(format!("line {n}: {name} twice in one setup block"));
            }
        }
        let id = |k: &str| {
            ids.get(k)
                .copied()
                .ok_or(format!("setup block at line {start}: no {k}"))
        };
        for f in SETUP_FIELDS {
            if !fields.contains_key(*f) {
                return Err(format!("setup block at line {start}: no {f}"));
            }
        }
        Ok(Vector {
            section: section.to_string(),
            line: start,
            mode: u8::try_from(id("mode")?)
                .map_err(|_| format!("line {start}: mode out of range"))?,
            kem_id: id("kem_id")?,
            kdf_id: id("kdf_id")?,
            aead_id: id("aead_id")?,
            fields,
            encryptions: Vec::new(),
            exports: Vec::new(),
        })
    }
}

/// The base-mode vectors, with a sanity check of the parse itself.
fn base_vectors() -> Vec<text::Vector> {
    let all = text::parse(&vector_text()).unwrap();
    assert_eq!(all.len(), 28, "setup blocks: 7 suites x 4 modes");
    let base: Vec<_> = all.into_iter().filter(|v| v.mode == 0).collect();
    // Independent count: lines that read exactly "mode: 0".
    let mode0_lines = vector_text()
        .lines()
        .filter(|l| l.trim() == "mode: 0")
        .count();
    assert_eq!(
        base.len(),
        mode0_lines,
        "base-mode vectors vs \"mode: 0\" lines"
    );
    base
}

fn count_per_kem(vectors: &[text::Vector]) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for v in vectors {
        *m.entry(v.kem_id).or_insert(0) += 1;
    }
    m
}

// The parser's own tests: they run whether or not the HPKE module exists.

#[test]
fn parser_finds_every_base_vector() {
    let base = base_vectors();
    let per_kem = count_per_kem(&base);
    println!("RFC 9180 base-mode vectors per KEM: {per_kem:x?}");
    assert_eq!(
        per_kem,
        EXPECTED_BASE_PER_KEM
            .iter()
            .copied()
            .collect::<BTreeMap<_, _>>()
    );
    for v in &base {
        // Export-only has no encryptions; the others list sequence numbers 0, 1, 2, 4, 255, 256.
        let seqs: Vec<u64> = v.encryptions.iter().map(|e| e.seq).collect();
        if v.aead_id == 0xffff {
            assert!(seqs.is_empty(), "{}", v.id());
            assert!(
                v.field("key").unwrap().is_empty() && v.field("base_nonce").unwrap().is_empty()
            );
        } else {
            assert_eq!(seqs, [0, 1, 2, 4, 255, 256], "{}", v.id());
        }
        assert_eq!(v.exports.len(), 3, "{}", v.id());
        assert!(
            v.exports.iter().all(|x| x.len == 32 && x.value.len() == 32),
            "{}",
            v.id()
        );
        assert!(
            v.exports[0].context.is_empty(),
            "{}: first exporter_context is empty",
            v.id()
        );
    }
}

#[test]
fn parser_joins_wrapped_hex() {
    // The P-521 vector wraps pkEm over four lines after the name and `key` starts on the
    // line after its name.
    let base = base_vectors();
    let p521 = base.iter().find(|v| v.kem_id == 0x0012).unwrap();
    let pk = p521.field("pkEm").unwrap();
    assert_eq!(pk.len(), 133);
    assert_eq!(pk[0], 0x04);
    assert_eq!(&pk[130..], [0x2f, 0x29, 0xb0]);
    assert_eq!(p521.field("key").unwrap().len(), 32);
    assert_eq!(p521.field("skRm").unwrap().len(), 66);
    // Ciphertexts wrap too: 29-byte plaintext + 16-byte tag.
    assert!(
        p521.encryptions
            .iter()
            .all(|e| e.ct.len() == e.pt.len() + 16)
    );
}

#[test]
fn parser_rejects_malformed_text() {
    let good = "# Test Vectors\n## S\n### Base Setup Information\n~~~\nmode: 0\nkem_id: 32\n~~~\n";
    assert!(
        text::parse(good).is_err(),
        "missing fields must be an error"
    );
    assert!(text::parse("no appendix").is_err());
    let bad_hex = "# Test Vectors\n~~~\nmode: 0\ninfo: 0g\n~~~\n";
    assert!(text::parse(bad_hex).is_err());
    let odd_hex = "# Test Vectors\n~~~\nmode: 0\ninfo: abc\n~~~\n";
    assert!(text::parse(odd_hex).is_err());
    let unterminated = "# Test Vectors\n~~~\nmode: 0\n";
    assert!(text::parse(unterminated).is_err());
    let orphan = "# Test Vectors\n### Encryptions\n~~~\nsequence number: 0\n~~~\n";
    assert!(text::parse(orphan).is_err());
}

// Checks against pqmls_provider::hpke.
mod against_hpke {
    use super::*;
    use pqmls_provider::hpke::{
        self, Aead, Context, DeriveProfile, Kdf, Kem, Suite, setup_base_receiver,
        setup_base_sender_derand,
    };

    /// Every failure, with the vector and field.
    #[derive(Default)]
    struct Report {
        failures: Vec<String>,
    }

    impl Report {
        fn fail(&mut self, v: &text::Vector, what: &str, msg: impl std::fmt::Display) {
            self.failures.push(format!("{} {what}: {msg}", v.id()));
        }

        fn eq(&mut self, v: &text::Vector, what: &str, expected: &[u8], got: &[u8]) {
            if expected != got {
                self.fail(
                    v,
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

    fn suite(v: &text::Vector) -> Suite {
        Suite {
            kem: Kem::from_id(v.kem_id).unwrap_or_else(|| panic!("{}: unknown KEM", v.id())),
            kdf: Kdf::from_id(v.kdf_id).unwrap_or_else(|| panic!("{}: unknown KDF", v.id())),
            aead: Aead::from_id(v.aead_id).unwrap_or_else(|| panic!("{}: unknown AEAD", v.id())),
        }
    }

    /// `base_nonce XOR I2OSP(seq, Nn)` (RFC 9180 section 5.2).
    fn nonce(base: &[u8], seq: u64) -> Vec<u8> {
        let mut n = base.to_vec();
        let tail = n.len() - 8;
        for (a, b) in n[tail..].iter_mut().zip(seq.to_be_bytes()) {
            *a ^= b;
        }
        n
    }

    fn check_context(r: &mut Report, v: &text::Vector, side: &str, ctx: &Context) {
        r.eq(
            v,
            &format!("{side} key"),
            v.field("key").unwrap(),
            ctx.key(),
        );
        r.eq(
            v,
            &format!("{side} base_nonce"),
            v.field("base_nonce").unwrap(),
            ctx.base_nonce(),
        );
        r.eq(
            v,
            &format!("{side} exporter_secret"),
            v.field("exporter_secret").unwrap(),
            ctx.exporter_secret(),
        );
        for (i, x) in v.exports.iter().enumerate() {
            match ctx.export(&x.context, x.len) {
                Ok(got) => r.eq(v, &format!("{side} export {i}"), &x.value, &got[..]),
                Err(e) => r.fail(v, &format!("{side} export {i}"), format!("error {e:?}")),
            }
        }
    }

    fn check_vector(r: &mut Report, v: &text::Vector) {
        let s = suite(v);
        let f = |name: &str| v.field(name).unwrap();
        assert_eq!(s.kem.id(), v.kem_id);

        // DeriveKeyPair (RFC 9180 section 7.1.3); the profile only matters for PQ KEMs.
        for (who, ikm, sk, pk) in [("R", "ikmR", "skRm", "pkRm"), ("E", "ikmE", "skEm", "pkEm")] {
            match hpke::derive_key_pair(s.kem, f(ikm), DeriveProfile::HpkePq) {
                Ok(kp) => {
                    r.eq(
                        v,
                        &format!("DeriveKeyPair({ikm}) private = {sk}"),
                        f(sk),
                        &kp.private,
                    );
                    r.eq(
                        v,
                        &format!("DeriveKeyPair({ikm}) public = {pk}"),
                        f(pk),
                        &kp.public,
                    );
                }
                Err(e) => r.fail(
                    v,
                    &format!("DeriveKeyPair({ikm}) for {who}"),
                    format!("error {e:?}"),
                ),
            }
        }

        let (enc, mut sender) = match setup_base_sender_derand(s, f("pkRm"), f("info"), f("ikmE")) {
            Ok(x) => x,
            Err(e) => return r.fail(v, "SetupBaseS", format!("error {e:?}")),
        };
        r.eq(v, "sender enc", f("enc"), &enc);
        check_context(r, v, "sender", &sender);
        let mut receiver = match setup_base_receiver(s, f("enc"), f("skRm"), f("info")) {
            Ok(x) => x,
            Err(e) => return r.fail(v, "SetupBaseR", format!("error {e:?}")),
        };
        check_context(r, v, "receiver", &receiver);

        // Encryptions in sequence; gaps filled with a dummy message sealed and opened.
        let mut seq = 0u64;
        for e in &v.encryptions {
            r.eq(
                v,
                &format!("seq {} nonce (from vector base_nonce)", e.seq),
                &e.nonce,
                &nonce(f("base_nonce"), e.seq),
            );
            while seq < e.seq {
                match sender.seal(b"dummy aad", b"dummy") {
                    Ok(ct) => {
                        if receiver.open(b"dummy aad", &ct).ok().as_deref()
                            != Some(b"dummy".as_slice())
                        {
                            r.fail(
                                v,
                                &format!("seq {seq} dummy"),
                                "receiver cannot open the sender's dummy",
                            );
                        }
                    }
                    Err(err) => r.fail(
                        v,
                        &format!("seq {seq} dummy"),
                        format!("seal error {err:?}"),
                    ),
                }
                seq += 1;
            }
            match sender.seal(&e.aad, &e.pt) {
                Ok(ct) => r.eq(v, &format!("seq {} sender ct", e.seq), &e.ct, &ct),
                Err(err) => r.fail(v, &format!("seq {} seal", e.seq), format!("error {err:?}")),
            }
            match receiver.open(&e.aad, &e.ct) {
                Ok(pt) => r.eq(v, &format!("seq {} receiver pt", e.seq), &e.pt, &pt),
                Err(err) => r.fail(v, &format!("seq {} open", e.seq), format!("error {err:?}")),
            }
            seq += 1;
        }

        // Negative checks on fresh receivers.
        if let Some(e0) = v.encryptions.first() {
            let mut rx = setup_base_receiver(s, f("enc"), f("skRm"), f("info")).unwrap();
            for bit in [0, e0.ct.len() * 8 - 1] {
                let mut bad = e0.ct.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                if rx.open(&e0.aad, &bad).is_ok() {
                    r.fail(v, &format!("seq 0 ct with bit {bit} flipped"), "opened");
                }
            }
            if rx.open(b"other aad", &e0.ct).is_ok() {
                r.fail(v, "seq 0 ct with another aad", "opened");
            }
            // A failed Open does not advance the sequence number (section 5.2).
            match rx.open(&e0.aad, &e0.ct) {
                Ok(pt) => r.eq(v, "seq 0 after failed opens", &e0.pt, &pt),
                Err(err) => r.fail(
                    v,
                    "seq 0 after failed opens",
                    format!("error {err:?} (sequence advanced?)"),
                ),
            }
        } else {
            // Export-only: no Seal or Open.
            let (_, mut tx) = setup_base_sender_derand(s, f("pkRm"), f("info"), f("ikmE")).unwrap();
            if tx.seal(b"", b"x").is_ok() {
                r.fail(v, "export-only seal", "succeeded");
            }
            if receiver.open(b"", &[0; 32]).is_ok() {
                r.fail(v, "export-only open", "succeeded");
            }
        }
        let enc_v = f("enc");
        let pk = f("pkRm");
        let sk = f("skRm");
        for (what, bytes) in [
            ("enc short", &enc_v[..enc_v.len() - 1]),
            ("enc empty", &[][..]),
        ] {
            if setup_base_receiver(s, bytes, sk, f("info")).is_ok() {
                r.fail(v, what, "accepted");
            }
        }
        let long_enc = [enc_v, &[0]].concat();
        if setup_base_receiver(s, &long_enc, sk, f("info")).is_ok() {
            r.fail(v, "enc one byte long", "accepted");
        }
        let long_pk = [pk, &[0]].concat();
        for (what, bytes) in [
            ("pkR short", &pk[..pk.len() - 1]),
            ("pkR long", &long_pk[..]),
            ("pkR empty", &[][..]),
        ] {
            if setup_base_sender_derand(s, bytes, f("info"), f("ikmE")).is_ok() {
                r.fail(v, what, "accepted");
            }
        }
        if setup_base_receiver(s, enc_v, &sk[..sk.len() - 1], f("info")).is_ok() {
            r.fail(v, "skR short", "accepted");
        }
    }

    #[test]
    fn rfc9180_base_mode() {
        let base = base_vectors();
        let mut r = Report::default();
        let mut checked: BTreeMap<u16, usize> = BTreeMap::new();
        for v in &base {
            // A panic in one vector is a failure of that vector, not the end of the run.
            let mut local = Report::default();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                check_vector(&mut local, v)
            }));
            r.failures.append(&mut local.failures);
            if let Err(p) = outcome {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                r.fail(v, "panic", msg);
            }
            *checked.entry(v.kem_id).or_insert(0) += 1;
        }
        println!("RFC 9180 base-mode vectors checked per KEM: {checked:x?}");
        assert_eq!(
            checked,
            EXPECTED_BASE_PER_KEM
                .iter()
                .copied()
                .collect::<BTreeMap<_, _>>()
        );
        assert!(
            r.failures.is_empty(),
            "{} failure(s):\n  {}",
            r.failures.len(),
            r.failures.join("\n  ")
        );
    }
}
