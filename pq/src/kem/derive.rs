//! HPKE `DeriveKeyPair` for the post-quantum KEMs, in the two profiles of DESIGN.md item 6.
//!
//! MLS derives every tree key with DeriveKeyPair, so all members of a group must use the
//! same profile or they compute different public keys:
//!
//! - [`DeriveProfile::HpkePq`]: what the drafts specify. draft-ietf-hpke-pq-04 sections 3
//!   and 4 call `SHAKE256.LabeledDerive(ikm, "DeriveKeyPair", "", L)` with the KEM's
//!   `suite_id = "KEM" || I2OSP(kem_id, 2)`, where (draft-irtf-cfrg-hpke, one-stage KDFs)
//!   `LabeledDerive(ikm, label, context, L) = Derive(ikm || "HPKE-v1" || suite_id ||
//!   I2OSP(len(label), 2) || label || I2OSP(L, 2) || context, L)` and
//!   `SHAKE256.Derive(x, L) = SHAKE256(x, 8L)`.
//! - [`DeriveProfile::Plain`]: `SHAKE256(ikm, 8L)`, what the OpenMLS 0.9 providers do
//!   through hpke-rs 0.7 (and the X-Wing draft's own HPKE section).
//!
//! `L` is the KEM's seed length: 64 for ML-KEM (`d || z`), 32 for X-Wing.

use zeroize::Zeroizing;

/// Which DeriveKeyPair construction to use (DESIGN.md item 6).
///
/// The default, stated here once for the whole project (the MLS provider's
/// `CryptoConfig` takes it from here), is [`DeriveProfile::Plain`]: DESIGN.md item 6 asks
/// for whatever interoperates with the OpenMLS 0.9 providers, and they derive that way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeriveProfile {
    /// The labelled SHAKE256 derivation of draft-ietf-hpke-pq (the spec profile).
    HpkePq,
    /// The plain `SHAKE256(ikm, L)` of hpke-rs 0.7 and the OpenMLS 0.9 providers: the
    /// default (see the type's documentation).
    #[default]
    Plain,
}

/// `"HPKE-v1"`, the version label of HPKE's labelled functions.
const HPKE_VERSION_LABEL: &[u8] = b"HPKE-v1";
/// The DeriveKeyPair label.
const DERIVE_KEY_PAIR_LABEL: &[u8] = b"DeriveKeyPair";

/// Derives the `L`-byte seed of a KEM key pair from `ikm`.
pub(crate) fn derive_seed<const L: usize>(
    kem_id: u16,
    ikm: &[u8],
    profile: DeriveProfile,
) -> Zeroizing<[u8; L]> {
    let mut seed = Zeroizing::new([0u8; L]);
    match profile {
        DeriveProfile::Plain => libcrux_sha3::shake256_ema(seed.as_mut_slice(), ikm),
        DeriveProfile::HpkePq => {
            // L is 32 or 64 and the label 13 bytes: both fit in two octets.
            let label_len = DERIVE_KEY_PAIR_LABEL.len() as u16;
            let out_len = L as u16;
            let mut labeled_ikm = Zeroizing::new(Vec::with_capacity(ikm.len() + 32));
            labeled_ikm.extend_from_slice(ikm);
            labeled_ikm.extend_from_slice(HPKE_VERSION_LABEL);
            labeled_ikm.extend_from_slice(b"KEM");
            labeled_ikm.extend_from_slice(&kem_id.to_be_bytes());
            labeled_ikm.extend_from_slice(&label_len.to_be_bytes());
            labeled_ikm.extend_from_slice(DERIVE_KEY_PAIR_LABEL);
            labeled_ikm.extend_from_slice(&out_len.to_be_bytes());
            // context = "" adds nothing.
            libcrux_sha3::shake256_ema(seed.as_mut_slice(), &labeled_ikm);
        }
    }
    seed
}
