//! Helpers shared by the known-answer test files.

use pqmls_pq::{Kem, XWing};

/// One X-Wing known-answer vector: `seed -> ek`; `Encaps_derand(ek, eseed) = (ct, ss)`
/// with a parsed and with a prepared key; `Decaps(dk, ct) = ss`. `label` names the
/// vector in failure messages.
pub fn check_xwing_vector(label: &str, seed: &[u8], ek: &[u8], eseed: &[u8], ct: &[u8], ss: &[u8]) {
    let dk = XWing::decapsulation_key_from_seed(seed).unwrap();
    assert_eq!(XWing::seed(&dk), seed, "{label}: seed round trip");
    assert_eq!(
        XWing::encapsulation_key(&dk).as_ref(),
        ek,
        "{label}: seed -> ek"
    );

    let parsed = XWing::encapsulation_key_from_bytes(ek).unwrap();
    let (our_ct, our_ss) = XWing::encapsulate_derand(&parsed, eseed).unwrap();
    assert_eq!(our_ct.as_ref(), ct, "{label}: encaps ct");
    assert_eq!(our_ss.as_bytes().as_slice(), ss, "{label}: encaps ss");

    let prepared = XWing::prepare(&parsed);
    let (our_ct, our_ss) = XWing::encapsulate_prepared_derand(&prepared, eseed).unwrap();
    assert_eq!(our_ct.as_ref(), ct, "{label}: prepared encaps ct");
    assert_eq!(
        our_ss.as_bytes().as_slice(),
        ss,
        "{label}: prepared encaps ss"
    );

    let our_ss = XWing::decapsulate(&dk, &XWing::ciphertext_from_bytes(ct).unwrap()).unwrap();
    assert_eq!(our_ss.as_bytes().as_slice(), ss, "{label}: decaps ss");
}
