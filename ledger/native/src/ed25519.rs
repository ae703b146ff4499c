//! Ed25519 verification that gives every signature the verdict of wattproof's acceptance rule
//! (docs/wire-format.md, "Signature"; the Python reference is `firmware_sim/ed25519.py`), whatever the
//! other signatures checked with it.
//!
//! The rule: A a canonical encoding of a point of prime order; S canonical (< L); R a canonical
//! encoding, not of small order; [S]B = R + [k]A (cofactorless). Keys are admitted by `strict_key`
//! (canonical, prime order; once per key). ed25519-dalek's `verify_strict` checks the rest: it refuses
//! a non-canonical S, small-order A and R, and compares R byte for byte with the encoding of
//! [S]B - [k]A (so a non-canonical R fails). `Signatures` computes exactly the same verdicts with the
//! same curve25519-dalek operations, in a cheaper order (docs/proofs.md, "Fast frame check"): it never
//! decompresses R (when the encoding of R' = [S]B - [k]A equals R's bytes, R decodes to R', so "R not
//! of small order" is "R' not of small order"; when it differs, both refuse), and it encodes the R' of
//! many signatures with one field inversion (`compress_batch_alloc`, the same bytes as `compress`).
//! Each signature's verdict depends on its own bytes only; `verify_strict` stays the reference the
//! tests compare it with (`agrees_with_verify_strict`). Each signature is checked alone:
//! `verify_batch`'s random linear combination lets a torsion component in R be cancelled by the
//! coefficients, i.e. by the neighbours, and it decodes R leniently (Wycheproof tcId 151); keeping
//! such R out of a batch costs a multiplication by L per signature, which with the batch is slower
//! than checking each signature alone (`cost_per_signature` below; figures in docs/proofs.md).

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha512};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// True when `p` is in the prime-order subgroup: [L]p = O, tested as [L - 1]p = -p with
/// curve25519-dalek's variable-time multiplication (the points are public; `is_torsion_free`
/// computes the same in constant time, measured slower: docs/proofs.md, "Fast frame check").
pub fn torsion_free(p: &EdwardsPoint) -> bool {
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&-Scalar::ONE, p, &Scalar::ZERO) == -p
}

/// The point that `bytes` encodes canonically (decoding and encoding again gives the same bytes),
/// when it is of prime order (not small order, no torsion component); None otherwise.
pub fn prime_order_point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let p = CompressedEdwardsY(*bytes).decompress()?;
    (p.compress().as_bytes() == bytes && !p.is_small_order() && torsion_free(&p)).then_some(p)
}

/// A device key the rule admits, ready for many signatures: its bytes (hashed into every challenge),
/// -A, and the ed25519-dalek key (for `verify_strict`, the reference).
#[derive(Clone, Copy)]
pub struct StrictKey {
    bytes: [u8; 32],
    minus_a: EdwardsPoint,
    #[cfg_attr(not(test), allow(dead_code))] // the reference's key: tests compare `Signatures` with it
    pub dalek: VerifyingKey,
}

/// The key for `bytes` when the rule admits it (see `prime_order_point`), cached per key for the
/// process (keys are per device: few, and checking one costs about one signature check).
pub fn strict_key(bytes: &[u8; 32]) -> Option<StrictKey> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Option<StrictKey>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hit) = cache.lock().map(|c| c.get(bytes).copied()).unwrap_or(None) {
        return hit;
    }
    let key = prime_order_point(bytes).map(|p| StrictKey { bytes: *bytes, minus_a: -p, dalek: VerifyingKey::from(p) });
    if let Ok(mut c) = cache.lock() {
        if c.len() >= 1 << 20 {
            c.clear(); // bounded: a flood of distinct keys costs time, never memory
        }
        c.insert(*bytes, key);
    }
    key
}

/// The reference: `sig` is a signature of `msg` by `key` under the rule, by ed25519-dalek's `verify_strict`.
#[cfg(test)]
pub fn verify(msg: &[u8], sig: &Signature, key: &StrictKey) -> bool {
    key.dalek.verify_strict(msg, sig).is_ok()
}

/// Signatures checked under the rule, each alone, with the R' of up to `CHUNK` of them encoded together:
/// `push` each (with a caller's slot number), then `finish` reports the slots whose signature holds.
/// Same verdicts as `verify` (module docs; tested).
#[derive(Default)]
pub struct Signatures {
    points: Vec<EdwardsPoint>,
    want_r: Vec<[u8; 32]>,
    slots: Vec<usize>,
}

/// Signatures encoded with one inversion (the inversion is ~2.6 µs, a multiplication ~0.03 µs).
pub const CHUNK: usize = 64;

impl Signatures {
    /// Computes R' = [S]B - [k]A for the signature (k = SHA-512(R || A || msg) mod L); a non-canonical S
    /// (>= L) is refused here, as `verify_strict` refuses it.
    pub fn push(&mut self, slot: usize, msg: &[u8], sig: &Signature, key: &StrictKey) {
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())) else { return };
        let h: [u8; 64] = Sha512::new().chain_update(sig.r_bytes()).chain_update(key.bytes).chain_update(msg)
            .finalize().into();
        let k = Scalar::from_bytes_mod_order_wide(&h);
        self.points.push(EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &key.minus_a, &s));
        self.want_r.push(*sig.r_bytes());
        self.slots.push(slot);
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Calls `good(slot)` for every pushed signature that holds: R' not of small order and R's bytes the
    /// canonical encoding of R'. Empties the set.
    pub fn finish(&mut self, mut good: impl FnMut(usize)) {
        let encoded = EdwardsPoint::compress_batch_alloc(&self.points);
        for (i, enc) in encoded.iter().enumerate() {
            if enc.as_bytes() == &self.want_r[i] && !self.points[i].is_small_order() {
                good(self.slots[i]);
            }
        }
        self.points.clear();
        self.want_r.clear();
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use ed25519_dalek::{Signer, SigningKey};
    use sha2::{Digest, Sha512};

    /// The verdict of the reference, asserted equal to the fast path's (alone and among honest neighbours).
    fn verify(msg: &[u8], sig: &Signature, key: &StrictKey) -> bool {
        let want = super::verify(msg, sig, key);
        assert_eq!(fast(&[(msg, *sig, *key)]), vec![want]);
        let honest = signing_key(99);
        let hk = strict_key(&honest.verifying_key().to_bytes()).unwrap();
        let hs = honest.sign(b"n");
        assert_eq!(fast(&[(b"n", hs, hk), (msg, *sig, *key), (b"n", hs, hk)]), vec![true, want, true]);
        want
    }

    /// Verdicts of the fast path (`Signatures`), in order.
    fn fast(items: &[(&[u8], Signature, StrictKey)]) -> Vec<bool> {
        let mut out = vec![false; items.len()];
        let mut sigs = Signatures::default();
        for (i, (m, s, k)) in items.iter().enumerate() {
            sigs.push(i, m, s, k);
        }
        sigs.finish(|i| out[i] = true);
        out
    }

    fn signing_key(i: u32) -> SigningKey {
        SigningKey::from_bytes(&sha2::Sha256::digest(i.to_le_bytes()).into())
    }

    /// A signature by `a` (a scalar private key) with nonce point R = [r]B + T: valid when T = O,
    /// otherwise valid only for a cofactored check and, in a batch, for some neighbours and not others.
    fn signed_with_torsion(a: &Scalar, msg: &[u8], t: &EdwardsPoint, r: u64) -> ([u8; 32], Signature) {
        let r = Scalar::from(r);
        signed_with_r(a, msg, (EdwardsPoint::mul_base(&r) + t).compress().to_bytes(), &r)
    }

    /// A signature by scalar key `a` whose R is given as bytes (any encoding), with S = r + k a.
    fn signed_with_r(a: &Scalar, msg: &[u8], r_bytes: [u8; 32], r: &Scalar) -> ([u8; 32], Signature) {
        let big_a = EdwardsPoint::mul_base(a).compress().to_bytes();
        let k = Scalar::from_hash(Sha512::new().chain_update(r_bytes).chain_update(big_a).chain_update(msg));
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice((r + k * a).as_bytes());
        (big_a, Signature::from_bytes(&sig))
    }

    fn neighbours(n: u32) -> Vec<(Vec<u8>, Signature, VerifyingKey)> {
        (0..n % 9 + 1)
            .map(|i| {
                let sk = signing_key(n * 100 + i);
                let m = format!("neighbour {n} {i}").into_bytes();
                let s = sk.sign(&m);
                (m, s, sk.verifying_key())
            })
            .collect()
    }

    #[test]
    fn a_nonce_with_a_torsion_component_is_refused_where_a_batch_would_depend_on_its_neighbours() {
        let a = Scalar::from(123_456_789u64);
        let (pk, bad) = signed_with_torsion(&a, b"m", &EIGHT_TORSION[1], 42);
        let (_, good) = signed_with_torsion(&a, b"m", &EdwardsPoint::default(), 42);
        let key = strict_key(&pk).expect("a prime-order key");
        assert!(verify(b"m", &good, &key));
        assert!(!verify(b"m", &bad, &key));
        let mut batch_verdicts = std::collections::HashSet::new();
        for n in 0..64u32 {
            let mut items = neighbours(n);
            items.push((b"m".to_vec(), bad, key.dalek));
            let ms: Vec<&[u8]> = items.iter().map(|(m, _, _)| m.as_slice()).collect();
            let ss: Vec<Signature> = items.iter().map(|(_, s, _)| *s).collect();
            let ks: Vec<VerifyingKey> = items.iter().map(|(_, _, k)| *k).collect();
            batch_verdicts.insert(ed25519_dalek::verify_batch(&ms, &ss, &ks).is_ok());
            assert!(items.iter().take(items.len() - 1).all(|(m, s, k)| k.verify_strict(m, s).is_ok()));
        }
        assert_eq!(batch_verdicts.len(), 2, "the batch equation accepts it with some neighbours, not others");
    }

    #[test]
    fn an_identity_nonce_encoded_with_the_sign_bit_is_refused_although_a_batch_accepts_it() {
        // Wycheproof tcId 151: R = y 1 with the sign bit of x set (x = 0), S = k a, so [S]B - [k]A = O.
        let a = Scalar::from(987_654_321u64);
        let mut r_bytes = EdwardsPoint::default().compress().to_bytes();
        r_bytes[31] |= 0x80;
        let (pk, sig) = signed_with_r(&a, b"m", r_bytes, &Scalar::ZERO);
        let key = strict_key(&pk).expect("a prime-order key");
        assert!(ed25519_dalek::verify_batch(&[b"m".as_slice()], &[sig], &[key.dalek]).is_ok());
        assert!(!verify(b"m", &sig, &key));
        r_bytes[31] &= 0x7f; // the canonical identity: refused as of small order
        assert!(!verify(b"m", &signed_with_r(&a, b"m", r_bytes, &Scalar::ZERO).1, &key));
    }

    #[test]
    fn keys_must_be_canonical_points_of_prime_order() {
        let good = signing_key(1).verifying_key().to_bytes();
        assert!(strict_key(&good).is_some());
        let p = CompressedEdwardsY(good).decompress().unwrap();
        for t in EIGHT_TORSION.iter() {
            assert!(strict_key(&t.compress().to_bytes()).is_none(), "small order");
            if t != &EdwardsPoint::default() {
                assert!(strict_key(&(p + t).compress().to_bytes()).is_none(), "mixed order");
            }
        }
        let mut y1_sign = [0u8; 32]; // y = 1 with the sign bit of x set (x = 0): not canonical
        y1_sign[0] = 1;
        y1_sign[31] = 0x80;
        assert!(strict_key(&y1_sign).is_none());
        let mut y_p_plus_1 = [0xffu8; 32]; // y = p + 1, i.e. 1 again: not canonical
        y_p_plus_1[0] = 0xee;
        y_p_plus_1[31] = 0x7f;
        assert!(strict_key(&y_p_plus_1).is_none());
        assert!(torsion_free(&ED25519_BASEPOINT_POINT));
        assert!(!torsion_free(&(ED25519_BASEPOINT_POINT + EIGHT_TORSION[4])));
    }

    #[test]
    fn s_must_be_canonical() {
        let sk = signing_key(7);
        let sig = sk.sign(b"x");
        let key = strict_key(&sk.verifying_key().to_bytes()).unwrap();
        assert!(verify(b"x", &sig, &key));
        let s = Scalar::from_canonical_bytes(*sig.s_bytes()).unwrap();
        let mut bytes = sig.to_bytes();
        let l_plus_s: [u8; 32] = { // S + L, computed with 256-bit addition on the little-endian bytes
            let l = [0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                     0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10u8];
            let (mut out, mut carry) = ([0u8; 32], 0u16);
            for i in 0..32 {
                let v = s.as_bytes()[i] as u16 + l[i] as u16 + carry;
                out[i] = v as u8;
                carry = v >> 8;
            }
            out
        };
        bytes[32..].copy_from_slice(&l_plus_s);
        assert!(!verify(b"x", &Signature::from_bytes(&bytes), &key));
    }

    #[test]
    fn agrees_with_verify_strict() {
        // honest signatures, and each mutated: bits of R, S or the message flipped, S + L, R with a torsion
        // component, R of small order (canonical or not), R = the identity's non-canonical encodings, R of a
        // point off the curve; mixed in chunks of several sizes, every verdict compared with verify_strict
        let mut items: Vec<(Vec<u8>, Signature, StrictKey)> = Vec::new();
        let l_bytes = [0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                       0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10u8]; // L, little-endian
        for i in 0..400u32 {
            let sk = signing_key(i % 7);
            let key = strict_key(&sk.verifying_key().to_bytes()).unwrap();
            let m = format!("frame {i}").into_bytes();
            let good = sk.sign(&m);
            let mut b = good.to_bytes();
            let mut msg = m.clone();
            match i % 10 {
                0 => {}
                1 => b[(i as usize / 10) % 32] ^= 1 << (i % 8),
                2 => b[32 + (i as usize / 10) % 32] ^= 1 << (i % 8),
                3 => msg[0] ^= 1,
                4 => {
                    let (mut out, mut carry) = ([0u8; 32], 0u16);
                    for j in 0..32 {
                        let v = b[32 + j] as u16 + l_bytes[j] as u16 + carry;
                        out[j] = v as u8;
                        carry = v >> 8;
                    }
                    b[32..].copy_from_slice(&out);
                }
                5 => {
                    let a = Scalar::from(1000 + i as u64);
                    let t = EIGHT_TORSION[1 + (i as usize / 10) % 7];
                    let (pk, s) = signed_with_torsion(&a, &m, &t, 7 + i as u64);
                    items.push((m.clone(), s, strict_key(&pk).unwrap()));
                    continue;
                }
                6 => b[..32].copy_from_slice(&EIGHT_TORSION[(i as usize / 10) % 8].compress().to_bytes()),
                7 => {
                    let mut r = [0u8; 32];
                    r[0] = 1;
                    r[31] = if i % 20 == 7 { 0x80 } else { 0 };
                    b[..32].copy_from_slice(&r);
                }
                8 => b[..32].copy_from_slice(&[0xffu8; 32]),
                _ => {
                    let a = Scalar::from(5000 + i as u64);
                    let (pk, s) = signed_with_torsion(&a, &m, &EdwardsPoint::default(), 11 + i as u64);
                    items.push((m.clone(), s, strict_key(&pk).unwrap()));
                    continue;
                }
            }
            items.push((msg, Signature::from_bytes(&b), key));
        }
        let want: Vec<bool> = items.iter().map(|(m, s, k)| super::verify(m, s, k)).collect();
        assert!(want.iter().filter(|&&w| w).count() >= 80 && want.iter().filter(|&&w| !w).count() >= 200);
        for chunk in [1usize, 3, 64, 400] {
            let mut got = Vec::new();
            for part in items.chunks(chunk) {
                let refs: Vec<(&[u8], Signature, StrictKey)> = part.iter().map(|(m, s, k)| (m.as_slice(), *s, *k)).collect();
                got.extend(fast(&refs));
            }
            assert_eq!(got, want, "chunks of {chunk}");
        }
    }

    /// Cost per signature of the variants (docs/proofs.md, "Fast frame check"):
    /// `cargo test --release -- --ignored --nocapture cost`.
    #[test]
    #[ignore]
    fn cost_per_signature() {
        use std::time::Instant;
        let n = 4096usize;
        let sks: Vec<SigningKey> = (0..16).map(signing_key).collect();
        let msgs: Vec<Vec<u8>> = (0..n).map(|i| format!("{{\"frame\":{i},\"readings\":[]}}").repeat(20).into_bytes()).collect();
        let sigs: Vec<Signature> = msgs.iter().enumerate().map(|(i, m)| sks[i % 16].sign(m)).collect();
        let keys: Vec<VerifyingKey> = (0..n).map(|i| sks[i % 16].verifying_key()).collect();
        let best = |f: &dyn Fn() -> bool| -> f64 {
            (0..5).map(|_| { let t = Instant::now(); assert!(f()); t.elapsed().as_secs_f64() * 1e6 / n as f64 })
                .fold(f64::INFINITY, f64::min)
        };
        const BATCH: usize = 256;
        let batch_only = || (0..n).step_by(BATCH).all(|lo| {
            let hi = (lo + BATCH).min(n);
            let ms: Vec<&[u8]> = msgs[lo..hi].iter().map(|m| m.as_slice()).collect();
            ed25519_dalek::verify_batch(&ms, &sigs[lo..hi], &keys[lo..hi]).is_ok()
        });
        let with = |check: &dyn Fn(&EdwardsPoint) -> bool| (0..n).step_by(BATCH).all(|lo| {
            let hi = (lo + BATCH).min(n);
            let admitted = sigs[lo..hi].iter().all(|s| {
                let s_ok: bool = Scalar::from_canonical_bytes(*s.s_bytes()).is_some().into();
                let r = CompressedEdwardsY(*s.r_bytes()).decompress();
                s_ok && r.is_some_and(|p| p.compress().as_bytes() == s.r_bytes() && !p.is_small_order() && check(&p))
            });
            let ms: Vec<&[u8]> = msgs[lo..hi].iter().map(|m| m.as_slice()).collect();
            admitted && ed25519_dalek::verify_batch(&ms, &sigs[lo..hi], &keys[lo..hi]).is_ok()
        });
        let a = best(&batch_only);
        let b_ct = best(&|| with(&|p: &EdwardsPoint| p.is_torsion_free()));
        let b_vt = best(&|| with(&torsion_free));
        let c = best(&|| (0..n).all(|i| keys[i].verify_strict(&msgs[i], &sigs[i]).is_ok()));
        let strict: Vec<StrictKey> = (0..n).map(|i| strict_key(keys[i].as_bytes()).unwrap()).collect();
        let d = best(&|| (0..n).step_by(CHUNK).all(|lo| {
            let mut s = Signatures::default();
            let hi = (lo + CHUNK).min(n);
            for i in lo..hi {
                s.push(i, &msgs[i], &sigs[i], &strict[i]);
            }
            let mut ok = 0;
            s.finish(|_| ok += 1);
            ok == hi - lo
        }));
        let k = best(&|| (0..n).all(|i| prime_order_point(keys[i].as_bytes()).is_some()));
        println!("µs/signature: (a) batch {a:.1}; (b) batch + R checks, is_torsion_free {b_ct:.1}, \
                  vartime [L-1]R = -R {b_vt:.1}; (c) verify_strict {c:.1}; (d) Signatures {d:.1}; key check {k:.1}");
    }
}
