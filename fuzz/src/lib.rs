//! Fuzz targets: differential ones for `pqmls-pq`, and robustness targets with built-in
//! properties for `pqmls-provider`.
//!
//! Each `pub fn pq_*(data: &[u8])` is the body of one cargo-fuzz target
//! (`fuzz_targets/pq_*.rs` is a one-line `fuzz_target!` wrapper around it). A body decodes
//! `data` with a [`Reader`] (every byte string is a valid input: missing bytes read as
//! zero), runs our implementation and one or two independent oracles on the same
//! input, and panics on any disagreement. The same bodies are replayed over the seed
//! corpora by `tests/replay.rs`, on stable and without libFuzzer.
//!
//! Oracles:
//!
//! | target | ours | oracle(s) |
//! |---|---|---|
//! | [`pq_xwing_decaps`] | [`XWing`] | RustCrypto `x-wing` (`DecapsulationKeyRejectNonContrib`), `libcrux-kem` |
//! | [`pq_ml_kem_decaps`] | [`MlKem768`], [`MlKem1024`] | RustCrypto `ml-kem` |
//! | [`pq_ml_kem_ek_parse`] | the three KEMs | RustCrypto `ml-kem` / `x-wing` (FIPS 203 section 7.2 check), `libcrux-kem` |
//! | [`pq_ml_dsa_verify`] | [`MlDsa44`], [`MlDsa65`], [`MlDsa87`] | RustCrypto `ml-dsa` |
//! | [`pq_composite_verify`] | [`MlDsa44Ed25519`], [`MlDsa65Ed25519`] | [`composite_verify_oracle`]: RustCrypto `ml-dsa` + `ed25519-dalek` + `sha2`, written here from draft-ietf-lamps-pq-composite-sigs |
//!
//! The provider targets live in their own modules (each brings a fixture):
//!
//! | target | code under test | checks |
//! |---|---|---|
//! | [`provider_hpke_open`] ([`provider_hpke`]) | `pqmls_provider::hpke` and `PqCrypto::hpke_open`, all 8 KEMs | no panic; both entry points agree; seal-then-open round trips, modified seals are rejected |
//! | [`provider_mls_process`] ([`provider_mls`]) | OpenMLS 0.9 on `pqmls_provider::Provider`, suite 0x004F | no panic processing messages, Welcomes and KeyPackages against a live group; what alice commits, bob accepts |
//!
//! Input formats are documented on each body; `tests/gen_corpus.rs` writes the seed
//! corpora in those formats.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Fuzz bodies panic by design.

pub mod provider_hpke;
pub mod provider_mls;
pub mod sdk_api;

pub use provider_hpke::provider_hpke_open;
pub use provider_mls::provider_mls_process;
pub use sdk_api::sdk_api_ops;

use ed25519_dalek::Signer as _;
use ml_dsa::{EncodedSignature, EncodedVerifyingKey};
use ml_kem::{Decapsulate as _, TryKeyInit as _, array::Array};
use pqmls_pq::{
    Error, Kem, MlDsa44, MlDsa44Ed25519, MlDsa65, MlDsa65Ed25519, MlDsa87, MlKem768, MlKem1024,
    SignatureScheme, XWing,
};
use sha2::{Digest, Sha512};
use x_wing::{Decapsulator as _, TryDecapsulate as _};

/// A fuzz body: panics on a disagreement.
pub type Body = fn(&[u8]);

/// Every fuzz body, by target name: what `tests/replay.rs` and the corpus generator use.
pub const TARGETS: &[(&str, Body)] = &[
    ("pq_xwing_decaps", pq_xwing_decaps),
    ("pq_ml_kem_decaps", pq_ml_kem_decaps),
    ("pq_ml_kem_ek_parse", pq_ml_kem_ek_parse),
    ("pq_ml_dsa_verify", pq_ml_dsa_verify),
    ("pq_composite_verify", pq_composite_verify),
    ("provider_hpke_open", provider_hpke_open),
    ("provider_mls_process", provider_mls_process),
    ("sdk_api_ops", sdk_api_ops),
];

// ---------------------------------------------------------------------------------------
// Input decoding
// ---------------------------------------------------------------------------------------

/// Reads structured values from fuzz input. Never fails: past the end it reads zeros.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// One byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        let lo = self.byte();
        let hi = self.byte();
        u16::from_le_bytes([lo, hi])
    }

    /// `N` bytes, zero-padded.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    /// Exactly `n` bytes, zero-padded.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        let k = n.min(self.data.len());
        out[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        out
    }

    /// A variable-length string: a `u16` length (reduced modulo `max + 1`), then that
    /// many bytes (fewer if the input ends).
    pub fn var(&mut self, max: usize) -> &'a [u8] {
        let len = usize::from(self.u16()) % (max + 1);
        let k = len.min(self.data.len());
        let (head, tail) = self.data.split_at(k);
        self.data = tail;
        head
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.data)
    }
}

/// Applies up to 8 byte XORs `(u16 position, u8 mask)` from `r` to `buf`.
fn xor_mutations(r: &mut Reader<'_>, buf: &mut [u8]) {
    let n = r.byte() % 9;
    for _ in 0..n {
        let pos = usize::from(r.u16());
        let mask = r.byte();
        if !buf.is_empty() {
            let len = buf.len();
            buf[pos % len] ^= mask;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------

/// X25519 u-coordinates of small order (and their non-canonical encodings: `p`, `p + 1`,
/// and the top bit set), for which `X25519(k, u)` is all-zero for every clamped `k`.
pub const X25519_SMALL_ORDER: [[u8; 32]; 12] = {
    const fn hex32(s: &[u8; 64]) -> [u8; 32] {
        const fn nib(c: u8) -> u8 {
            match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => panic!("not hex"),
            }
        }
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            out[i] = nib(s[2 * i]) << 4 | nib(s[2 * i + 1]);
            i += 1;
        }
        out
    }
    [
        // 0 (order 1 as u = 0: the point (0, 0) of order 2)
        hex32(b"0000000000000000000000000000000000000000000000000000000000000000"),
        // 1 (order 4)
        hex32(b"0100000000000000000000000000000000000000000000000000000000000000"),
        // order 8
        hex32(b"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        // order 8
        hex32(b"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        // p - 1
        hex32(b"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        // p (non-canonical 0)
        hex32(b"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        // p + 1 (non-canonical 1)
        hex32(b"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        // the same with the (ignored) top bit set
        hex32(b"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880"),
        hex32(b"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7"),
        hex32(b"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        hex32(b"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        hex32(b"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
    ]
};

/// ML-KEM-768 ciphertext length (the `ct_m` part of an X-Wing ciphertext).
const ML_KEM_768_CT_LEN: usize = 1088;
/// ML-KEM-768 encapsulation key length (the `ek_m` part of an X-Wing key).
const ML_KEM_768_EK_LEN: usize = 1184;

/// Whether X25519(`sk`, `u`) is all-zero (x25519-dalek, clamping `sk`).
fn x25519_is_zero(sk: [u8; 32], u: [u8; 32]) -> bool {
    let sk = x25519_dalek::StaticSecret::from(sk);
    !sk.diffie_hellman(&x25519_dalek::PublicKey::from(u))
        .was_contributory()
}

/// X-Wing's `sk_x`: bytes 64..96 of SHAKE256(seed, 96) (draft section 5.2).
fn xwing_sk_x(seed: &[u8; 32]) -> [u8; 32] {
    use shake::{ExtendableOutput as _, Update as _, XofReader as _};
    let mut xof = shake::Shake256::default();
    xof.update(seed);
    let mut expanded = [0u8; 96];
    xof.finalize_xof().read(&mut expanded);
    expanded[64..].try_into().unwrap()
}

fn last32(bytes: &[u8]) -> [u8; 32] {
    bytes[bytes.len() - 32..].try_into().unwrap()
}

// ---------------------------------------------------------------------------------------
// 1. X-Wing decapsulation
// ---------------------------------------------------------------------------------------

/// X-Wing decapsulation, ours vs RustCrypto `x-wing` (rejecting non-contributory
/// X25519) vs `libcrux-kem`: same shared secret or all reject; and key generation and
/// (in mode 1) encapsulation agree byte for byte.
///
/// Input: `mode: u8` (mod 3), `seed: [u8; 32]`, then
/// - mode 0: `ct: [u8; 1120]` as given;
/// - mode 1: `eseed: [u8; 64]`: `ct` is a real encapsulation to the key (checked against
///   both oracles);
/// - mode 2: `ct_m: [u8; 1088]`, `i: u8`: `ct_x` is small-order point `i` (must reject);
///
/// then XOR mutations of `ct` (`n: u8` mod 9, `n` times `pos: u16`, `mask: u8`).
pub fn pq_xwing_decaps(data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.byte() % 3;
    let seed: [u8; 32] = r.array();

    // Key generation: all three from the same seed.
    let dk = XWing::decapsulation_key_from_seed(&seed).unwrap();
    let ek = XWing::encapsulation_key(&dk).as_ref().to_vec();
    let rc_dk = x_wing::DecapsulationKeyRejectNonContrib::from(seed);
    assert_eq!(
        ek,
        x_wing::KeyExport::to_bytes(rc_dk.encapsulation_key()).as_slice(),
        "X-Wing keygen differs from x-wing"
    );
    let (lc_sk, lc_pk) =
        libcrux_kem::key_gen_derand(libcrux_kem::Algorithm::XWingKemDraft06, &seed).unwrap();
    assert_eq!(ek, lc_pk.encode(), "X-Wing keygen differs from libcrux-kem");

    let (mut ct, encaps_ss) = match mode {
        0 => (r.bytes(XWing::CT_LEN), None),
        1 => {
            let eseed: [u8; 64] = r.array();
            let (ct, ss) = xwing_encaps_agree(&ek, &eseed).expect("own key is contributory");
            (ct, Some(ss))
        }
        _ => {
            let mut ct = r.bytes(ML_KEM_768_CT_LEN);
            let i = usize::from(r.byte()) % X25519_SMALL_ORDER.len();
            ct.extend_from_slice(&X25519_SMALL_ORDER[i]);
            (ct, None)
        }
    };
    let before = ct.clone();
    xor_mutations(&mut r, &mut ct);
    let unmutated = before == ct;

    let ours = XWing::decapsulate(&dk, &XWing::ciphertext_from_bytes(&ct).unwrap());
    let rc_ct = x_wing::Ciphertext::try_from(ct.as_slice()).unwrap();
    let rc = rc_dk.try_decapsulate(&rc_ct).map(|ss| ss.to_vec());
    let lc = libcrux_kem::Ct::decode(libcrux_kem::Algorithm::XWingKemDraft06, &ct)
        .and_then(|c| c.decapsulate(&lc_sk))
        .map(|ss| ss.encode());

    match &ours {
        Ok(ss) => {
            let ss = ss.as_bytes().to_vec();
            assert_eq!(
                rc.ok(),
                Some(ss.clone()),
                "X-Wing decaps differs from x-wing"
            );
            assert_eq!(
                lc.ok(),
                Some(ss.clone()),
                "X-Wing decaps differs from libcrux-kem"
            );
            if let (Some(e), true) = (encaps_ss, unmutated) {
                assert_eq!(e, ss, "X-Wing decaps of a fresh encapsulation");
            }
        }
        Err(Error::NonContributory) => {
            // Independently of both oracles: X25519(sk_x, ct_x) must really be all-zero.
            assert!(
                x25519_is_zero(xwing_sk_x(&seed), last32(&ct)),
                "we reject a contributory ct_x as non-contributory"
            );
            // x-wing's rejecting key decides by x25519-dalek's `was_contributory`.
            assert!(rc.is_err(), "we reject as non-contributory, x-wing accepts");
            // libcrux rejects an all-zero X25519 output too (unit test
            // `oracles_reject_small_order_ct_x`); were it to accept one, the check above
            // already shows our rejection is right, so its answer is not asserted here.
            let _ = lc;
        }
        Err(e) => panic!("unexpected X-Wing decaps error {e:?}"),
    }
    if mode == 2 && unmutated {
        assert!(
            matches!(ours, Err(Error::NonContributory)),
            "small-order ct_x accepted"
        );
    }
}

/// X-Wing `Encaps_derand(ek, eseed)`: ours (plain and prepared) vs x-wing vs libcrux-kem.
/// Returns our `(ct, ss)`, or `None` if we reject the key as non-contributory (then the
/// oracles' X25519 output must be all-zero).
fn xwing_encaps_agree(ek_bytes: &[u8], eseed: &[u8; 64]) -> Option<(Vec<u8>, Vec<u8>)> {
    let ek = XWing::encapsulation_key_from_bytes(ek_bytes).unwrap();
    let ours = XWing::encapsulate_derand(&ek, eseed);
    let prepared = XWing::encapsulate_prepared_derand(&XWing::prepare(&ek), eseed);
    let lc = libcrux_kem::PublicKey::decode(libcrux_kem::Algorithm::XWingKemDraft06, ek_bytes)
        .unwrap()
        .encapsulate_derand(eseed);
    match (ours, prepared) {
        (Ok((ct, ss)), Ok((ct2, ss2))) => {
            let (ct, ss) = (ct.as_ref().to_vec(), ss.as_bytes().to_vec());
            assert_eq!(ct, ct2.as_ref(), "X-Wing prepared encaps ct");
            assert_eq!(ss, ss2.as_bytes(), "X-Wing prepared encaps ss");
            let rc_ek = x_wing::EncapsulationKey::try_from(ek_bytes).unwrap();
            let (rc_ct, rc_ss) = rc_ek.encapsulate_deterministic(&Array::from(*eseed));
            assert_eq!(ct, rc_ct.as_slice(), "X-Wing encaps ct differs from x-wing");
            assert_eq!(ss, rc_ss.as_slice(), "X-Wing encaps ss differs from x-wing");
            let (lc_ss, lc_ct) = lc.expect("libcrux-kem rejects an encapsulation we accept");
            assert_eq!(
                ct,
                lc_ct.encode(),
                "X-Wing encaps ct differs from libcrux-kem"
            );
            assert_eq!(
                ss,
                lc_ss.encode(),
                "X-Wing encaps ss differs from libcrux-kem"
            );
            Some((ct, ss))
        }
        (Err(Error::NonContributory), Err(Error::NonContributory)) => {
            let ek_x: [u8; 32] = eseed[32..].try_into().unwrap();
            assert!(
                x25519_is_zero(ek_x, last32(ek_bytes)),
                "we reject a contributory X-Wing encapsulation"
            );
            assert!(
                lc.is_err(),
                "libcrux-kem accepts a non-contributory encapsulation"
            );
            None
        }
        (a, b) => panic!(
            "X-Wing encaps: plain {:?} vs prepared {:?}",
            a.map(|_| ()),
            b.map(|_| ())
        ),
    }
}

// ---------------------------------------------------------------------------------------
// 2. ML-KEM decapsulation
// ---------------------------------------------------------------------------------------

macro_rules! ml_kem_decaps {
    ($r:expr, $mode:expr, $Ours:ty, $Rc:ty, $RcCt:ty) => {{
        let r: &mut Reader<'_> = $r;
        let seed: [u8; 64] = r.array();
        let dk = <$Ours>::decapsulation_key_from_seed(&seed).unwrap();
        let ek = <$Ours>::encapsulation_key(&dk).as_ref().to_vec();
        let rc_dk = ml_kem::DecapsulationKey::<$Rc>::from_seed(Array::from(seed));
        assert_eq!(
            ek,
            ml_kem::KeyExport::to_bytes(rc_dk.encapsulation_key()).as_slice(),
            concat!(stringify!($Ours), " keygen differs from ml-kem")
        );
        let (mut ct, encaps_ss) = if $mode == 1 {
            let m: [u8; 32] = r.array();
            let (ct, ss) = ml_kem_encaps_agree!(&ek, &m, $Ours, $Rc);
            (ct, Some(ss))
        } else {
            (r.bytes(<$Ours>::CT_LEN), None)
        };
        let before = ct.clone();
        xor_mutations(r, &mut ct);
        let ours = <$Ours>::decapsulate(&dk, &<$Ours>::ciphertext_from_bytes(&ct).unwrap())
            .expect("ML-KEM decapsulation never fails");
        let rc = rc_dk.decapsulate(&<$RcCt>::try_from(ct.as_slice()).unwrap());
        assert_eq!(
            ours.as_bytes().as_slice(),
            rc.as_slice(),
            concat!(stringify!($Ours), " decaps differs from ml-kem")
        );
        if let (Some(e), true) = (encaps_ss, before == ct) {
            assert_eq!(
                e,
                ours.as_bytes().as_slice(),
                "decaps of a fresh encapsulation"
            );
        }
    }};
}

/// `ML-KEM.Encaps_internal(ek, m)`: ours (plain and prepared) vs RustCrypto; `ek` must
/// parse. Evaluates to our `(ct, ss)`.
macro_rules! ml_kem_encaps_agree {
    ($ek:expr, $m:expr, $Ours:ty, $Rc:ty) => {{
        let ek_bytes: &[u8] = $ek;
        let m: &[u8; 32] = $m;
        let ek = <$Ours>::encapsulation_key_from_bytes(ek_bytes).unwrap();
        let (ct, ss) = <$Ours>::encapsulate_derand(&ek, m).unwrap();
        let (ct2, ss2) = <$Ours>::encapsulate_prepared_derand(&<$Ours>::prepare(&ek), m).unwrap();
        assert_eq!(ct.as_ref(), ct2.as_ref(), "prepared encaps ct");
        assert_eq!(ss.as_bytes(), ss2.as_bytes(), "prepared encaps ss");
        let rc_ek = ml_kem::EncapsulationKey::<$Rc>::new_from_slice(ek_bytes).unwrap();
        let (rc_ct, rc_ss) = rc_ek.encapsulate_deterministic(&Array::from(*m));
        assert_eq!(
            ct.as_ref(),
            rc_ct.as_slice(),
            concat!(stringify!($Ours), " encaps ct differs from ml-kem")
        );
        assert_eq!(
            ss.as_bytes().as_slice(),
            rc_ss.as_slice(),
            concat!(stringify!($Ours), " encaps ss differs from ml-kem")
        );
        (ct.as_ref().to_vec(), ss.as_bytes().to_vec())
    }};
}

/// ML-KEM-768/1024 decapsulation, ours vs RustCrypto `ml-kem` from the same seed:
/// equal shared secrets, implicit rejection included; key generation and (mode 1)
/// encapsulation agree too.
///
/// Input: `sel: u8` (even: ML-KEM-768, odd: ML-KEM-1024), `mode: u8` (mod 2),
/// `seed: [u8; 64]` (`d || z`), then mode 0: `ct: [u8; CT_LEN]`; mode 1: `m: [u8; 32]`
/// and `ct` is a real encapsulation; then XOR mutations of `ct`.
pub fn pq_ml_kem_decaps(data: &[u8]) {
    let mut r = Reader::new(data);
    let sel = r.byte() % 2;
    let mode = r.byte() % 2;
    if sel == 0 {
        ml_kem_decaps!(
            &mut r,
            mode,
            MlKem768,
            ml_kem::MlKem768,
            ml_kem::ml_kem_768::Ciphertext
        );
    } else {
        ml_kem_decaps!(
            &mut r,
            mode,
            MlKem1024,
            ml_kem::MlKem1024,
            ml_kem::ml_kem_1024::Ciphertext
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. Encapsulation key parsing
// ---------------------------------------------------------------------------------------

/// Sets the 12-bit coefficient `i` of a `ByteEncode_12` string to `v`.
pub fn set_coefficient(enc: &mut [u8], i: usize, v: u16) {
    let j = i / 2 * 3;
    let [lo, hi] = v.to_le_bytes();
    if i.is_multiple_of(2) {
        enc[j] = lo;
        enc[j + 1] = (enc[j + 1] & 0xf0) | (hi & 0x0f);
    } else {
        enc[j + 1] = (enc[j + 1] & 0x0f) | (lo << 4);
        enc[j + 2] = ((v >> 4) & 0xff) as u8;
    }
}

/// Coefficient overwrites of an encoded `t̂` (`n: u8` mod 5, then `n` times
/// `index: u16`, `kind: u8`, `value: u16`): values at and around `q = 3329`.
fn coefficient_mutations(r: &mut Reader<'_>, t_hat: &mut [u8]) {
    let coefficients = t_hat.len() * 2 / 3;
    let n = r.byte() % 5;
    for _ in 0..n {
        let i = usize::from(r.u16()) % coefficients;
        let kind = r.byte();
        let raw = r.u16();
        let v = match kind % 8 {
            0 => 3328,
            1 => 3329,
            2 => 3330,
            3 => 4095,
            4 => 0,
            _ => raw % 4096,
        };
        set_coefficient(t_hat, i, v);
    }
}

macro_rules! ml_kem_ek_parse {
    ($r:expr, $mode:expr, $Ours:ty, $Rc:ty) => {{
        let r: &mut Reader<'_> = $r;
        let mut ek = if $mode == 0 {
            r.bytes(<$Ours>::EK_LEN)
        } else {
            let seed: [u8; 64] = r.array();
            let dk = <$Ours>::decapsulation_key_from_seed(&seed).unwrap();
            <$Ours>::encapsulation_key(&dk).as_ref().to_vec()
        };
        let t_len = ek.len() - 32;
        match $mode {
            1 => coefficient_mutations(r, &mut ek[..t_len]),
            2 => xor_mutations(r, &mut ek),
            _ => {}
        }
        let ours = <$Ours>::encapsulation_key_from_bytes(&ek);
        let rc = ml_kem::EncapsulationKey::<$Rc>::new_from_slice(&ek);
        match &ours {
            Ok(_) | Err(Error::InvalidEncapsulationKey) => {}
            Err(e) => panic!("unexpected ek parse error {e:?}"),
        }
        assert_eq!(
            ours.is_ok(),
            rc.is_ok(),
            concat!(stringify!($Ours), " ek accept/reject differs from ml-kem")
        );
        if ours.is_ok() {
            let m: [u8; 32] = r.array();
            ml_kem_encaps_agree!(&ek, &m, $Ours, $Rc);
        }
    }};
}

/// Encapsulation key parsing for ML-KEM-768, ML-KEM-1024 and X-Wing: our accept/reject
/// equals RustCrypto's (FIPS 203 section 7.2 modulus check; for X-Wing also x-wing's and
/// libcrux-kem's); an accepted key encapsulates to the same `(ct, ss)` with the same
/// randomness (X-Wing: or both see an all-zero X25519 output).
///
/// Input: `sel: u8` (mod 3: 768, 1024, X-Wing), `mode: u8` (mod 3), then
/// - mode 0: `ek: [u8; EK_LEN]` as given;
/// - mode 1: `seed` (64 bytes; X-Wing: 32) of a real key, then coefficient overwrites
///   (`n: u8` mod 5, `n` times `index: u16`, `kind: u8`, `value: u16`); for X-Wing then
///   `x: u8`: if `x < 12`, `pk_x` becomes small-order point `x`;
/// - mode 2: `seed` of a real key, then XOR mutations;
///
/// then the encapsulation randomness (32 bytes; X-Wing: 64).
pub fn pq_ml_kem_ek_parse(data: &[u8]) {
    let mut r = Reader::new(data);
    let sel = r.byte() % 3;
    let mode = r.byte() % 3;
    match sel {
        0 => ml_kem_ek_parse!(&mut r, mode, MlKem768, ml_kem::MlKem768),
        1 => ml_kem_ek_parse!(&mut r, mode, MlKem1024, ml_kem::MlKem1024),
        _ => xwing_ek_parse(&mut r, mode),
    }
}

fn xwing_ek_parse(r: &mut Reader<'_>, mode: u8) {
    let mut ek = if mode == 0 {
        r.bytes(XWing::EK_LEN)
    } else {
        let seed: [u8; 32] = r.array();
        let dk = XWing::decapsulation_key_from_seed(&seed).unwrap();
        XWing::encapsulation_key(&dk).as_ref().to_vec()
    };
    match mode {
        1 => {
            coefficient_mutations(r, &mut ek[..ML_KEM_768_EK_LEN - 32]);
            let x = usize::from(r.byte());
            if let Some(p) = X25519_SMALL_ORDER.get(x) {
                ek[ML_KEM_768_EK_LEN..].copy_from_slice(p);
            }
        }
        2 => xor_mutations(r, &mut ek),
        _ => {}
    }
    let ours = XWing::encapsulation_key_from_bytes(&ek);
    let rc = x_wing::EncapsulationKey::try_from(ek.as_slice());
    let lc = libcrux_kem::PublicKey::decode(libcrux_kem::Algorithm::XWingKemDraft06, &ek);
    match &ours {
        Ok(_) | Err(Error::InvalidEncapsulationKey) => {}
        Err(e) => panic!("unexpected X-Wing ek parse error {e:?}"),
    }
    assert_eq!(
        ours.is_ok(),
        rc.is_ok(),
        "X-Wing ek accept/reject differs from x-wing"
    );
    assert_eq!(
        ours.is_ok(),
        lc.is_ok(),
        "X-Wing ek accept/reject differs from libcrux-kem"
    );
    if ours.is_ok() {
        let eseed: [u8; 64] = r.array();
        xwing_encaps_agree(&ek, &eseed);
    }
}

// ---------------------------------------------------------------------------------------
// 4. ML-DSA verification
// ---------------------------------------------------------------------------------------

/// RustCrypto `ML-DSA.Verify(pk, M, sig, ctx)` on encoded inputs (any decoding failure
/// rejects).
fn ml_dsa_verify_oracle<P: ml_dsa::MlDsaParams>(
    vk: &[u8],
    msg: &[u8],
    ctx: &[u8],
    sig: &[u8],
) -> bool {
    let (Ok(vk), Ok(sig)) = (
        EncodedVerifyingKey::<P>::try_from(vk),
        EncodedSignature::<P>::try_from(sig),
    ) else {
        return false;
    };
    let Some(sig) = ml_dsa::Signature::<P>::decode(&sig) else {
        return false;
    };
    ml_dsa::VerifyingKey::<P>::decode(&vk).verify_with_context(msg, ctx, &sig)
}

/// RustCrypto `ML-DSA.Sign(sk, M, ctx)` with explicit `rnd`, from the seed `ξ`:
/// `Sign_internal(sk, 0 || len(ctx) || ctx || M, rnd)` (FIPS 204 Algorithm 2).
/// Returns `(vk, sig)`. `ctx` must be at most 255 bytes.
fn ml_dsa_sign_oracle<P: ml_dsa::MlDsaParams>(
    seed: &[u8; 32],
    msg: &[u8],
    ctx: &[u8],
    rnd: &[u8; 32],
) -> (Vec<u8>, Vec<u8>) {
    let sk = ml_dsa::SigningKey::<P>::from_seed(&Array::from(*seed));
    let vk: &ml_dsa::VerifyingKey<P> = sk.as_ref();
    let len = u8::try_from(ctx.len()).unwrap();
    let sig = sk
        .expanded_key()
        .sign_internal(&[&[0, len], ctx, msg], &Array::from(*rnd));
    (vk.encode().to_vec(), sig.encode().to_vec())
}

/// Ours: parse, then verify; any error rejects.
fn verify_ours<S: SignatureScheme>(vk: &[u8], msg: &[u8], ctx: &[u8], sig: &[u8]) -> bool {
    let Ok(vk) = S::verifying_key_from_bytes(vk) else {
        return false;
    };
    let Ok(sig) = S::signature_from_bytes(sig) else {
        return false;
    };
    S::verify(&vk, msg, ctx, &sig).is_ok()
}

/// Mutations of a signed `(vk, msg, ctx, sig)`: `n: u8` mod 9, then `n` times
/// `kind: u8`, `pos: u16`, `mask: u8`. Kinds (mod 8): 0 sig anywhere, 1 sig's last
/// `tail` bytes (the ML-DSA hint `h`), 2 sig's first `head` bytes (`c̃`), 3 vk, 4 msg,
/// 5 ctx, 6 append `mask` to msg, 7 append `mask` to ctx. Returns whether anything
/// changed.
#[allow(clippy::too_many_arguments)]
fn signed_mutations(
    r: &mut Reader<'_>,
    vk: &mut [u8],
    msg: &mut Vec<u8>,
    ctx: &mut Vec<u8>,
    sig: &mut [u8],
    head: usize,
    tail: usize,
) -> bool {
    let before = (vk.to_vec(), msg.clone(), ctx.clone(), sig.to_vec());
    let n = r.byte() % 9;
    for _ in 0..n {
        let kind = r.byte() % 8;
        let pos = usize::from(r.u16());
        let mask = r.byte();
        let xor_at = |buf: &mut [u8], off: usize, len: usize| {
            if len > 0 {
                buf[off + pos % len] ^= mask;
            }
        };
        match kind {
            0 => xor_at(sig, 0, sig.len()),
            1 => xor_at(sig, sig.len() - tail, tail),
            2 => xor_at(sig, 0, head),
            3 => xor_at(vk, 0, vk.len()),
            4 => {
                let len = msg.len();
                xor_at(msg, 0, len);
            }
            5 => {
                let len = ctx.len();
                xor_at(ctx, 0, len);
            }
            6 => msg.push(mask),
            _ => ctx.push(mask),
        }
    }
    before != (vk.to_vec(), msg.clone(), ctx.clone(), sig.to_vec())
}

/// Per parameter set: `(c̃ length, hint length ω + k)` (FIPS 204 table 1 and 2).
const fn ml_dsa_layout(sel: u8) -> (usize, usize) {
    match sel {
        0 => (32, 80 + 4),
        1 => (48, 55 + 6),
        _ => (64, 75 + 8),
    }
}

fn ml_dsa_case<S: SignatureScheme, P: ml_dsa::MlDsaParams>(r: &mut Reader<'_>, sel: u8) {
    let mode = r.byte() % 2;
    if mode == 0 {
        let vk = r.bytes(S::VK_LEN);
        let sig = r.bytes(S::SIG_LEN);
        let ctx = r.var(300);
        let msg = r.rest();
        assert_eq!(
            verify_ours::<S>(&vk, msg, ctx, &sig),
            ml_dsa_verify_oracle::<P>(&vk, msg, ctx, &sig),
            "{} verify differs from ml-dsa (raw)",
            S::NAME
        );
        return;
    }
    // Signed: sign with ours, check against RustCrypto's signature, then mutate.
    let seed: [u8; 32] = r.array();
    let rnd: [u8; 32] = r.array();
    let mut ctx = r.var(255).to_vec();
    let mut msg = r.var(4096).to_vec();
    let sk = S::signing_key_from_seed(&seed).unwrap();
    let mut vk = S::verifying_key(&sk).as_ref().to_vec();
    let mut sig = S::sign_derand(&sk, &msg, &ctx, &rnd)
        .unwrap()
        .as_ref()
        .to_vec();
    let (rc_vk, rc_sig) = ml_dsa_sign_oracle::<P>(&seed, &msg, &ctx, &rnd);
    assert_eq!(vk, rc_vk, "{} keygen differs from ml-dsa", S::NAME);
    assert_eq!(sig, rc_sig, "{} signature differs from ml-dsa", S::NAME);
    let (head, tail) = ml_dsa_layout(sel);
    let changed = signed_mutations(r, &mut vk, &mut msg, &mut ctx, &mut sig, head, tail);
    let ours = verify_ours::<S>(&vk, &msg, &ctx, &sig);
    let rc = ml_dsa_verify_oracle::<P>(&vk, &msg, &ctx, &sig);
    assert_eq!(ours, rc, "{} verify differs from ml-dsa (signed)", S::NAME);
    if !changed {
        assert!(ours, "{} rejects its own signature", S::NAME);
    }
}

/// ML-DSA-44/65/87 verification, ours vs RustCrypto `ml-dsa`: accept/reject agree. In
/// signed mode, key generation and hedged signing agree byte for byte first.
///
/// Input: `sel: u8` (mod 3: 44, 65, 87), `mode: u8` (mod 2), then
/// - mode 0: `vk: [u8; VK_LEN]`, `sig: [u8; SIG_LEN]`, `ctx` (`u16` length mod 301),
///   `msg` (the rest);
/// - mode 1: `seed: [u8; 32]`, `rnd: [u8; 32]`, `ctx` (length mod 256), `msg` (length
///   mod 4097), then mutations (see `signed_mutations`).
pub fn pq_ml_dsa_verify(data: &[u8]) {
    let mut r = Reader::new(data);
    let sel = r.byte() % 3;
    match sel {
        0 => ml_dsa_case::<MlDsa44, ml_dsa::MlDsa44>(&mut r, sel),
        1 => ml_dsa_case::<MlDsa65, ml_dsa::MlDsa65>(&mut r, sel),
        _ => ml_dsa_case::<MlDsa87, ml_dsa::MlDsa87>(&mut r, sel),
    }
}

// ---------------------------------------------------------------------------------------
// 5. Composite ML-DSA + Ed25519
// ---------------------------------------------------------------------------------------

/// `Prefix` of draft-ietf-lamps-pq-composite-sigs section 2.2.
pub const COMPOSITE_PREFIX: &[u8] = b"CompositeAlgorithmSignatures2025";
/// `Label` of id-MLDSA44-Ed25519-SHA512.
pub const LABEL_MLDSA44_ED25519: &[u8] = b"COMPSIG-MLDSA44-Ed25519-SHA512";
/// `Label` of id-MLDSA65-Ed25519-SHA512.
pub const LABEL_MLDSA65_ED25519: &[u8] = b"COMPSIG-MLDSA65-Ed25519-SHA512";

/// `M' = Prefix || Label || len(ctx) || ctx || SHA-512(M)`; `ctx` at most 255 bytes.
pub fn composite_message(label: &[u8], ctx: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = COMPOSITE_PREFIX.to_vec();
    m.extend_from_slice(label);
    m.push(u8::try_from(ctx.len()).unwrap());
    m.extend_from_slice(ctx);
    m.extend_from_slice(&Sha512::digest(msg));
    m
}

/// Composite verification, from the draft (section 3.3): split `vk = mldsaPK || edPK`
/// and `sig = mldsaSig || edSig` at the ML-DSA lengths, reject a `ctx` over 255 bytes,
/// form `M'`, then `ML-DSA.Verify(mldsaPK, M', mldsaSig, ctx = Label)` (RustCrypto) and
/// `Ed25519.Verify(edPK, M', edSig)` (`ed25519-dalek` `verify_strict`); both must pass.
pub fn composite_verify_oracle<P: ml_dsa::MlDsaParams>(
    label: &[u8],
    ml_vk_len: usize,
    ml_sig_len: usize,
    vk: &[u8],
    msg: &[u8],
    ctx: &[u8],
    sig: &[u8],
) -> bool {
    if ctx.len() > 255 || vk.len() != ml_vk_len + 32 || sig.len() != ml_sig_len + 64 {
        return false;
    }
    let (ml_vk, ed_vk) = vk.split_at(ml_vk_len);
    let (ml_sig, ed_sig) = sig.split_at(ml_sig_len);
    let m = composite_message(label, ctx, msg);
    if !ml_dsa_verify_oracle::<P>(ml_vk, &m, label, ml_sig) {
        return false;
    }
    let Ok(ed_vk) = ed25519_dalek::VerifyingKey::from_bytes(ed_vk.try_into().unwrap()) else {
        return false;
    };
    let ed_sig = ed25519_dalek::Signature::from_bytes(ed_sig.try_into().unwrap());
    ed_vk.verify_strict(&m, &ed_sig).is_ok()
}

/// Composite signing from the draft (section 3.2) with the oracles: returns
/// `(vk, sig)` for the 64-byte seed `mldsaSeed || edSeed`, signing `M'` built with
/// `label` and giving ML-DSA the context `ml_ctx`.
fn composite_sign_oracle<P: ml_dsa::MlDsaParams>(
    label: &[u8],
    ml_ctx: &[u8],
    seed: &[u8; 64],
    msg: &[u8],
    ctx: &[u8],
    rnd: &[u8; 32],
) -> (Vec<u8>, Vec<u8>) {
    let m = composite_message(label, ctx, msg);
    let ml_seed: [u8; 32] = seed[..32].try_into().unwrap();
    let ed = ed25519_dalek::SigningKey::from_bytes(seed[32..].try_into().unwrap());
    let (mut vk, mut sig) = ml_dsa_sign_oracle::<P>(&ml_seed, &m, ml_ctx, rnd);
    vk.extend_from_slice(ed.verifying_key().as_bytes());
    sig.extend_from_slice(&ed.sign(&m).to_bytes());
    (vk, sig)
}

/// Ed25519's group order `L`, little-endian: `S + L` is a non-canonical `S`.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Adds `L` to the little-endian 32-byte `s` (wrapping at 2^256).
fn add_l(s: &mut [u8]) {
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(ED25519_L) {
        let t = u16::from(*b) + u16::from(l) + carry;
        *b = (t & 0xff) as u8;
        carry = t >> 8;
    }
}

#[allow(clippy::too_many_arguments)]
fn composite_case<S: SignatureScheme, P: ml_dsa::MlDsaParams>(
    r: &mut Reader<'_>,
    label: &[u8],
    other_label: &[u8],
    ml_vk_len: usize,
    ml_sig_len: usize,
    head: usize,
    tail: usize,
) {
    let oracle = |vk: &[u8], msg: &[u8], ctx: &[u8], sig: &[u8]| {
        composite_verify_oracle::<P>(label, ml_vk_len, ml_sig_len, vk, msg, ctx, sig)
    };
    let mode = r.byte() % 4;
    if mode == 0 {
        let vk = r.bytes(S::VK_LEN);
        let sig = r.bytes(S::SIG_LEN);
        let ctx = r.var(300);
        let msg = r.rest();
        assert_eq!(
            verify_ours::<S>(&vk, msg, ctx, &sig),
            oracle(&vk, msg, ctx, &sig),
            "{} verify differs from the oracle (raw)",
            S::NAME
        );
        return;
    }
    let seed: [u8; 64] = r.array();
    let rnd: [u8; 32] = r.array();
    let mut ctx = r.var(255).to_vec();
    let mut msg = r.var(4096).to_vec();
    let sk = S::signing_key_from_seed(&seed).unwrap();
    let mut vk = S::verifying_key(&sk).as_ref().to_vec();
    let mut sig = S::sign_derand(&sk, &msg, &ctx, &rnd)
        .unwrap()
        .as_ref()
        .to_vec();
    let (o_vk, o_sig) = composite_sign_oracle::<P>(label, label, &seed, &msg, &ctx, &rnd);
    assert_eq!(vk, o_vk, "{} keygen differs from the oracle", S::NAME);
    assert_eq!(sig, o_sig, "{} signature differs from the oracle", S::NAME);

    let mut must_reject = false;
    let changed = match mode {
        1 => signed_mutations(r, &mut vk, &mut msg, &mut ctx, &mut sig, head, tail + 64),
        2 => {
            // Ed25519 edge cases: non-canonical S, small-order A or R.
            match r.byte() % 4 {
                0 => add_l(&mut sig[ml_sig_len + 32..]),
                1 => {
                    vk[ml_vk_len..].copy_from_slice(&ED25519_SMALL_ORDER[usize::from(r.byte()) % 3])
                }
                2 => sig[ml_sig_len..ml_sig_len + 32]
                    .copy_from_slice(&ED25519_SMALL_ORDER[usize::from(r.byte()) % 3]),
                _ => {
                    // Components swapped in from a different message.
                    let other =
                        composite_sign_oracle::<P>(label, label, &seed, b"other", &ctx, &rnd).1;
                    if r.byte().is_multiple_of(2) {
                        sig[..ml_sig_len].copy_from_slice(&other[..ml_sig_len]);
                    } else {
                        sig[ml_sig_len..].copy_from_slice(&other[ml_sig_len..]);
                    }
                }
            }
            must_reject = msg != b"other";
            true
        }
        _ => {
            // Domain separation: the right keys, but signed under the other scheme's
            // label (in M', as the ML-DSA context, or both) or as pure ML-DSA over M.
            let (l, c): (&[u8], &[u8]) = match r.byte() % 4 {
                0 => (other_label, label),
                1 => (label, other_label),
                2 => (other_label, other_label),
                _ => (label, b""),
            };
            sig = composite_sign_oracle::<P>(l, c, &seed, &msg, &ctx, &rnd).1;
            must_reject = true;
            true
        }
    };
    let ours = verify_ours::<S>(&vk, &msg, &ctx, &sig);
    let o = oracle(&vk, &msg, &ctx, &sig);
    assert_eq!(
        ours,
        o,
        "{} verify differs from the oracle (mode {mode})",
        S::NAME
    );
    if !changed {
        assert!(ours, "{} rejects its own signature", S::NAME);
    }
    if must_reject && mode != 2 {
        assert!(!ours, "{} accepts a cross-domain signature", S::NAME);
    }
    if must_reject && mode == 2 {
        assert!(!ours, "{} accepts a broken Ed25519 component", S::NAME);
    }
}

/// Small-order Ed25519 point encodings: the identity, `(0, -1)` of order 2, and the
/// non-canonical identity `y = p + 1`.
const ED25519_SMALL_ORDER: [[u8; 32]; 3] = {
    let mut id = [0u8; 32];
    id[0] = 1;
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let mut p_plus_one = [0xffu8; 32];
    p_plus_one[0] = 0xee;
    p_plus_one[31] = 0x7f;
    [id, minus_one, p_plus_one]
};

/// Composite ML-DSA-44/65 + Ed25519 verification, ours vs [`composite_verify_oracle`]:
/// accept/reject agree; in the signed modes key generation and signing agree byte for
/// byte with the oracle's signer first.
///
/// Input: `sel: u8` (even: MLDSA44-Ed25519, odd: MLDSA65-Ed25519), `mode: u8` (mod 4),
/// then
/// - mode 0: `vk`, `sig`, `ctx` (`u16` length mod 301), `msg` (the rest);
/// - modes 1-3: `seed: [u8; 64]`, `rnd: [u8; 32]`, `ctx` (length mod 256), `msg`
///   (length mod 4097), then mode 1: mutations (see `signed_mutations`; the hint region
///   covers the Ed25519 part too); mode 2: `kind: u8`, `i: u8`: non-canonical `S`,
///   small-order `A` or `R`, or a component from another message; mode 3: `kind: u8`:
///   signed under the wrong label or context (must reject).
pub fn pq_composite_verify(data: &[u8]) {
    let mut r = Reader::new(data);
    if r.byte().is_multiple_of(2) {
        composite_case::<MlDsa44Ed25519, ml_dsa::MlDsa44>(
            &mut r,
            LABEL_MLDSA44_ED25519,
            LABEL_MLDSA65_ED25519,
            MlDsa44::VK_LEN,
            MlDsa44::SIG_LEN,
            32,
            80 + 4,
        );
    } else {
        composite_case::<MlDsa65Ed25519, ml_dsa::MlDsa65>(
            &mut r,
            LABEL_MLDSA65_ED25519,
            LABEL_MLDSA44_ED25519,
            MlDsa65::VK_LEN,
            MlDsa65::SIG_LEN,
            48,
            55 + 6,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_order_points_give_zero() {
        for p in X25519_SMALL_ORDER {
            assert!(x25519_is_zero([0x42; 32], p));
            assert!(x25519_is_zero([0xff; 32], p));
        }
    }

    #[test]
    fn xwing_sk_x_matches_the_public_key() {
        let seed = [7u8; 32];
        let dk = XWing::decapsulation_key_from_seed(&seed).unwrap();
        let pk_x = last32(XWing::encapsulation_key(&dk).as_ref());
        let sk = x25519_dalek::StaticSecret::from(xwing_sk_x(&seed));
        assert_eq!(x25519_dalek::PublicKey::from(&sk).to_bytes(), pk_x);
    }

    /// Both oracles reject every small-order `ct_x` (so the fallback check in
    /// `pq_xwing_decaps` is not what the assertions rest on today).
    #[test]
    fn oracles_reject_small_order_ct_x() {
        let seed = [9u8; 32];
        let rc_dk = x_wing::DecapsulationKeyRejectNonContrib::from(seed);
        let (lc_sk, _) =
            libcrux_kem::key_gen_derand(libcrux_kem::Algorithm::XWingKemDraft06, &seed).unwrap();
        for p in X25519_SMALL_ORDER {
            let mut ct = vec![0x33u8; ML_KEM_768_CT_LEN];
            ct.extend_from_slice(&p);
            let rc_ct = x_wing::Ciphertext::try_from(ct.as_slice()).unwrap();
            assert!(rc_dk.try_decapsulate(&rc_ct).is_err());
            let lc_ct =
                libcrux_kem::Ct::decode(libcrux_kem::Algorithm::XWingKemDraft06, &ct).unwrap();
            assert!(lc_ct.decapsulate(&lc_sk).is_err());
        }
    }

    #[test]
    fn coefficient_round_trip() {
        let mut enc = [0u8; 6];
        for (i, v) in [(0, 0xabc), (1, 0x123), (2, 0xfff), (3, 0x001)] {
            set_coefficient(&mut enc, i, v);
        }
        let get = |i: usize| {
            let j = i / 2 * 3;
            let w = u32::from(enc[j]) | u32::from(enc[j + 1]) << 8 | u32::from(enc[j + 2]) << 16;
            (w >> (12 * (i % 2))) & 0xfff
        };
        assert_eq!(
            [get(0), get(1), get(2), get(3)],
            [0xabc, 0x123, 0xfff, 0x001]
        );
    }

    #[test]
    fn empty_inputs() {
        for (_, body) in TARGETS {
            body(&[]);
        }
    }
}
