//! `provider_hpke_open`: HPKE base-mode open of `pqmls-provider` on arbitrary input, for
//! each of its eight KEMs, through both entry points: the [`hpke`] module
//! (`setup_base_receiver` + `Context::open`) and `OpenMlsCrypto::hpke_open` of
//! [`PqCrypto`]. The two must agree (same plaintext or both reject) and never panic.
//!
//! In seal mode the body first seals the input to the recipient key itself (with
//! derandomised encapsulation), so it knows the answer: the unmodified ciphertext must
//! open to the plaintext through both paths, a second message must open in sequence, the
//! exporters of sender and receiver must agree, a prepared recipient key must encapsulate
//! exactly like the unprepared one, and any change to `enc`, `ct`, `aad` or `info` must be
//! rejected.

use crate::{Reader, xor_mutations};
use openmls_traits::crypto::OpenMlsCrypto as _;
use openmls_traits::types::{HpkeAeadType, HpkeCiphertext, HpkeConfig, HpkeKdfType, HpkeKemType};
use pqmls_pq::{Kem as _, MlKem768, MlKem1024, XWing};
use pqmls_provider::PqCrypto;
use pqmls_provider::hpke::{
    self, Aead, DeriveProfile, HpkeError, Kdf, Kem, KeyPair, RecipientKey, Suite,
};
use std::sync::OnceLock;

/// The eight KEMs, in the order the selector byte picks them.
pub const KEMS: [Kem; 8] = [
    Kem::DhKemP256,
    Kem::DhKemP384,
    Kem::DhKemP521,
    Kem::DhKemX25519,
    Kem::DhKemX448,
    Kem::MlKem768,
    Kem::MlKem1024,
    Kem::XWing,
];

/// The KDFs, in the order the selector byte picks them.
pub const KDFS: [Kdf; 3] = [Kdf::HkdfSha256, Kdf::HkdfSha384, Kdf::HkdfSha512];

/// The AEADs, in the order the selector byte picks them (export-only included: it must
/// refuse to seal and open).
pub const AEADS: [Aead; 4] = [
    Aead::Aes128Gcm,
    Aead::Aes256Gcm,
    Aead::ChaCha20Poly1305,
    Aead::ExportOnly,
];

/// The `ikm` every recipient key is derived from (`DeriveKeyPair`, plain profile).
pub const RECIPIENT_IKM: &[u8] = b"pqmls-fuzz provider_hpke_open recipient key, fixed ikm";

/// Flag bit: seal the input first (see the module docs).
pub const FLAG_SEAL: u8 = 0x01;
/// Flag bit: `enc` (open mode) or `ikm_e` (seal mode) has exactly the KEM's length.
pub const FLAG_EXACT_LEN: u8 = 0x02;
/// Flag bit (seal mode): open with `info || 0x00` (must fail).
pub const FLAG_WRONG_INFO: u8 = 0x04;
/// Flag bit (seal mode): open with `aad || 0x00` (must fail).
pub const FLAG_WRONG_AAD: u8 = 0x08;

/// Longest `enc` read in open mode (above the longest real one, ML-KEM-1024's 1568).
const MAX_ENC: usize = 2048;
/// Longest ciphertext or plaintext read.
const MAX_MSG: usize = 4096;
/// Longest `aad` and `info` read.
const MAX_LABEL: usize = 512;
/// Longest `ikm_e` read when its length is free.
const MAX_IKM_E: usize = 128;
/// The exporter context used in the exporter checks.
const EXPORTER_CONTEXT: &[u8] = b"pqmls-fuzz exporter";

/// The selector byte for KEM `kem`, KDF `kdf` and AEAD `aead` (indices into [`KEMS`],
/// [`KDFS`], [`AEADS`]).
pub const fn selector(kem: usize, kdf: usize, aead: usize) -> u8 {
    (kem + 8 * kdf + 24 * aead) as u8
}

/// The suite a selector byte picks: KEM `sel % 8`, KDF `(sel / 8) % 3`, AEAD
/// `(sel / 24) % 4`.
pub fn suite_of(sel: u8) -> Suite {
    let sel = usize::from(sel);
    Suite {
        kem: KEMS[sel % 8],
        kdf: KDFS[(sel / 8) % 3],
        aead: AEADS[(sel / 24) % 4],
    }
}

/// The recipient key pair of `kem` (derived once).
pub fn recipient(kem: Kem) -> &'static KeyPair {
    static KEYS: OnceLock<Vec<KeyPair>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        KEMS.iter()
            .map(|&k| hpke::derive_key_pair(k, RECIPIENT_IKM, DeriveProfile::Plain).unwrap())
            .collect()
    });
    let i = KEMS.iter().position(|&k| k == kem).unwrap();
    &keys[i]
}

fn crypto() -> &'static PqCrypto {
    static CRYPTO: OnceLock<PqCrypto> = OnceLock::new();
    CRYPTO.get_or_init(|| PqCrypto::new().unwrap())
}

/// The OpenMLS HPKE configuration of `suite`.
pub fn hpke_config(suite: Suite) -> HpkeConfig {
    let kem = match suite.kem {
        Kem::DhKemP256 => HpkeKemType::DhKemP256,
        Kem::DhKemP384 => HpkeKemType::DhKemP384,
        Kem::DhKemP521 => HpkeKemType::DhKemP521,
        Kem::DhKemX25519 => HpkeKemType::DhKem25519,
        Kem::DhKemX448 => HpkeKemType::DhKem448,
        Kem::MlKem768 => HpkeKemType::MlKem768,
        Kem::MlKem1024 => HpkeKemType::MlKem1024,
        Kem::XWing => HpkeKemType::XWingKemDraft6,
    };
    let kdf = match suite.kdf {
        Kdf::HkdfSha256 => HpkeKdfType::HkdfSha256,
        Kdf::HkdfSha384 => HpkeKdfType::HkdfSha384,
        Kdf::HkdfSha512 => HpkeKdfType::HkdfSha512,
    };
    let aead = match suite.aead {
        Aead::Aes128Gcm => HpkeAeadType::AesGcm128,
        Aead::Aes256Gcm => HpkeAeadType::AesGcm256,
        Aead::ChaCha20Poly1305 => HpkeAeadType::ChaCha20Poly1305,
        Aead::ExportOnly => HpkeAeadType::Export,
    };
    HpkeConfig(kem, kdf, aead)
}

/// The length of the encapsulation randomness `ikm_e` of `kem` (`Nsk` for a DHKEM, any
/// length works there; exactly this for the post-quantum KEMs).
pub fn eseed_len(kem: Kem) -> usize {
    match kem {
        Kem::MlKem768 => MlKem768::ESEED_LEN,
        Kem::MlKem1024 => MlKem1024::ESEED_LEN,
        Kem::XWing => XWing::ESEED_LEN,
        dh => dh.private_key_len(),
    }
}

/// Opens `ct` through both entry points; they must agree. Returns the plaintext.
fn open_both(suite: Suite, enc: &[u8], ct: &[u8], aad: &[u8], info: &[u8]) -> Option<Vec<u8>> {
    let sk = &recipient(suite.kem).private;
    let module = hpke::setup_base_receiver(suite, enc, sk, info).and_then(|mut c| c.open(aad, ct));
    let input = HpkeCiphertext {
        kem_output: enc.to_vec().into(),
        ciphertext: ct.to_vec().into(),
    };
    let trait_path = crypto().hpke_open(hpke_config(suite), &input, sk, info, aad);
    let (module, trait_path) = (module.ok(), trait_path.ok());
    assert_eq!(
        module, trait_path,
        "{suite:?}: hpke::setup_base_receiver + open and OpenMlsCrypto::hpke_open disagree"
    );
    if suite.aead == Aead::ExportOnly {
        assert!(module.is_none(), "{suite:?}: an export-only context opened");
    }
    module
}

/// Receiver-side export through both entry points; they must agree.
fn export_both(suite: Suite, enc: &[u8], info: &[u8], len: usize) -> Option<Vec<u8>> {
    let sk = &recipient(suite.kem).private;
    let module = hpke::setup_base_receiver(suite, enc, sk, info)
        .and_then(|c| c.export(EXPORTER_CONTEXT, len))
        .map(|s| s.to_vec());
    let trait_path = crypto()
        .hpke_setup_receiver_and_export(hpke_config(suite), enc, sk, info, EXPORTER_CONTEXT, len)
        .map(|s| s.to_vec());
    let (module, trait_path) = (module.ok(), trait_path.ok());
    assert_eq!(
        module, trait_path,
        "{suite:?}: receiver export through hpke and OpenMlsCrypto disagree"
    );
    module
}

/// HPKE open of arbitrary input against a fixed recipient key of each KEM.
///
/// Input: `sel: u8` (the suite, [`suite_of`]), `flags: u8` ([`FLAG_SEAL`], ...),
/// `export_len: u8`, then
/// - open mode: `enc` (exactly `Nenc` zero-padded bytes with [`FLAG_EXACT_LEN`], else
///   `u16` length mod 2049 and bytes), `ct` (`u16` length mod 4097, bytes), `aad`, `info`
///   (each `u16` length mod 513, bytes): both entry points must agree on `Open` and on
///   the exported secret;
/// - seal mode: `info`, `aad` (as above), `ikm_e` (exactly the KEM's length with
///   [`FLAG_EXACT_LEN`], else `u16` length mod 129), `pt` (`u16` length mod 4097), then XOR
///   mutations of `enc` and of `ct` (each `n: u8` mod 9, `n` times `pos: u16`, `mask: u8`):
///   see the module docs for what must hold.
pub fn provider_hpke_open(data: &[u8]) {
    let mut r = Reader::new(data);
    let suite = suite_of(r.byte());
    let flags = r.byte();
    let export_len = usize::from(r.byte());
    if flags & FLAG_SEAL == 0 {
        let enc = if flags & FLAG_EXACT_LEN != 0 {
            r.bytes(suite.kem.enc_len())
        } else {
            r.var(MAX_ENC).to_vec()
        };
        let ct = r.var(MAX_MSG);
        let aad = r.var(MAX_LABEL);
        let info = r.var(MAX_LABEL);
        open_both(suite, &enc, ct, aad, info);
        export_both(suite, &enc, info, export_len);
    } else {
        seal_then_open(suite, flags, export_len, &mut r);
    }
}

fn seal_then_open(suite: Suite, flags: u8, export_len: usize, r: &mut Reader<'_>) {
    let info = r.var(MAX_LABEL);
    let aad = r.var(MAX_LABEL);
    let ikm_e = if flags & FLAG_EXACT_LEN != 0 {
        r.bytes(eseed_len(suite.kem))
    } else {
        r.var(MAX_IKM_E).to_vec()
    };
    let pt = r.var(MAX_MSG);
    let pk = &recipient(suite.kem).public;

    // Encapsulation: the prepared key must give exactly what the plain one gives.
    let plain = RecipientKey::parse(suite.kem, pk).unwrap();
    let mut prepared = RecipientKey::parse(suite.kem, pk).unwrap();
    prepared.prepare();
    let (a, b) = (plain.encap_derand(&ikm_e), prepared.encap_derand(&ikm_e));
    match (&a, &b) {
        (Ok((ss_a, enc_a)), Ok((ss_b, enc_b))) => {
            assert_eq!(
                enc_a, enc_b,
                "{suite:?}: prepared key encapsulates differently"
            );
            assert!(
                **ss_a == **ss_b,
                "{suite:?}: prepared key gives another secret"
            );
        }
        (Err(e_a), Err(e_b)) => assert_eq!(e_a, e_b, "{suite:?}: encap errors differ"),
        _ => panic!("{suite:?}: prepared and plain key disagree: {a:?} vs {b:?}"),
    }

    let sealed = hpke::setup_base_sender_derand(suite, pk, info, &ikm_e);
    let pq = matches!(suite.kem, Kem::MlKem768 | Kem::MlKem1024 | Kem::XWing);
    let (enc, mut sender) = match sealed {
        Ok(s) => s,
        Err(HpkeError::InvalidLength) if pq && ikm_e.len() != eseed_len(suite.kem) => return,
        Err(e) => panic!("{suite:?}: sealing to our own key failed: {e:?}"),
    };
    assert!(
        !pq || ikm_e.len() == eseed_len(suite.kem),
        "{suite:?}: encapsulation randomness of the wrong length accepted"
    );
    assert_eq!(enc.len(), suite.kem.enc_len(), "{suite:?}: enc length");
    assert_eq!(
        Some(&enc),
        a.as_ref().ok().map(|(_, e)| e),
        "{suite:?}: enc"
    );

    // The exporters agree.
    let sent_secret = sender.export(EXPORTER_CONTEXT, export_len).ok();
    let received_secret = export_both(suite, &enc, info, export_len);
    assert_eq!(
        sent_secret.as_deref().map(|s| s.as_slice()),
        received_secret.as_deref(),
        "{suite:?}: sender and receiver export differently"
    );

    if suite.aead == Aead::ExportOnly {
        assert_eq!(sender.seal(aad, pt), Err(HpkeError::ExportOnly));
        open_both(suite, &enc, pt, aad, info);
        return;
    }
    let ct = sender.seal(aad, pt).unwrap();
    let ct2 = sender.seal(aad, pt).unwrap();
    assert_ne!(ct, ct2, "{suite:?}: two seals under one nonce");

    // The round trip, and the second message in sequence.
    assert_eq!(
        open_both(suite, &enc, &ct, aad, info).as_deref(),
        Some(pt),
        "{suite:?}: round trip"
    );
    let sk = &recipient(suite.kem).private;
    let mut receiver = hpke::setup_base_receiver(suite, &enc, sk, info).unwrap();
    assert_eq!(
        receiver.open(aad, &ct).unwrap(),
        pt,
        "{suite:?}: first open"
    );
    assert_eq!(
        receiver.open(aad, &ct2).unwrap(),
        pt,
        "{suite:?}: second open"
    );

    // Any change must be rejected.
    let mut enc_m = enc.clone();
    xor_mutations(r, &mut enc_m);
    let mut ct_m = ct.clone();
    xor_mutations(r, &mut ct_m);
    let mut info_m = info.to_vec();
    if flags & FLAG_WRONG_INFO != 0 {
        info_m.push(0);
    }
    let mut aad_m = aad.to_vec();
    if flags & FLAG_WRONG_AAD != 0 {
        aad_m.push(0);
    }
    let changed = enc_m != enc || ct_m != ct || info_m != info || aad_m != aad;
    let opened = open_both(suite, &enc_m, &ct_m, &aad_m, &info_m);
    if changed {
        assert_eq!(opened, None, "{suite:?}: a modified seal opened");
    } else {
        assert_eq!(opened.as_deref(), Some(pt), "{suite:?}: round trip");
    }
}
