//! wattproof's native frame checks, called from Python through ctypes (`ledger/nativelib.py`).
//!
//! Owns two jobs: deciding fast that many signed frames are authentic, with well-kept libraries
//! (ed25519-dalek's strict verification, zstd, sha2, base64) and no cryptography of its own; and
//! hashing many leaves and RFC 6962 Merkle roots with sha2 (SHA-NI where the CPU has it), so that the
//! Python side needs no per-process JIT compilation for it.
//! It only ever says "proven good" (0) or "not proven" (1) per frame; every "not proven" frame is
//! decided, and its problem worded, by the Python reference check (decode, RFC 8785, and the Ed25519
//! reference `firmware_sim/ed25519.py`), so a disagreement can only make this faster path slower,
//! never more lenient than the reference.
//!
//! What "proven good" means (docs/proofs.md, "Fast frame check"):
//! * `wp_check_frames`: the stored frame decompresses (at most `max_raw` bytes, exactly the size its first zstd
//!   frame declares: the bytes the reference reads), its SHA-256 equals
//!   the recorded one, it holds exactly one `"sig":"…"` member whose value is 64 bytes of base64url,
//!   and the device's Ed25519 signature covers the frame's bytes with that member removed — the
//!   bytes the firmware signs (canonical JSON without `sig`).
//! * `wp_verify_batch`: each `(message, signature, key)` verifies under the acceptance rule
//!   (docs/wire-format.md, "Signature"), the rule `wp_check_frames` applies to a frame's signature too.
//!
//! Each signature is checked alone with the verdict of ed25519-dalek's `verify_strict` (computed by
//! `ed25519::Signatures`, tested equal), its key admitted once by `ed25519::strict_key` (canonical
//! encoding of a point of prime order): together, wattproof's acceptance rule, so a verdict never depends
//! on the other frames of the call. (`verify_batch` was faster but lets a torsion component in R, or a
//! non-canonical R, pass depending on the batch; keeping those out costs more than it saves:
//! `src/ed25519.rs`.) `wp_check_frames_raw` also hands the checked frames' bytes back, so that the Python
//! side needs no per-frame work for the frames it proves.
//!
//! Safety: the C entry points trust the caller for pointers and lengths (the Python side builds
//! them from numpy arrays it owns); nothing else here is `unsafe`, and no input byte can panic.

mod ed25519;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519::{strict_key, Signatures, StrictKey, CHUNK};
use ed25519_dalek::Signature;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::slice;

const OK: u8 = 0;
const NOT_PROVEN: u8 = 1;
const SIG_KEY: &[u8] = b"\"sig\":\"";
const SIG_MEMBER: &[u8] = b",\"sig\":\"";

/// ABI version: bump when a signature below or what a verdict means changes (the loader refuses a
/// stale library). 3: the acceptance rule of docs/wire-format.md, one signature at a time.
/// 4: `wp_zstd_sizes` and `wp_check_frames_raw` (the checked frames' bytes handed back).
#[no_mangle]
pub extern "C" fn wp_abi_version() -> u32 {
    4
}

/// The frame's bytes without its one `"sig":"…"` member, and the signature; None if not exactly that shape.
fn split_signature(raw: &[u8]) -> Option<(Vec<u8>, Signature)> {
    let mut found = None;
    let mut from = 0;
    while let Some(at) = find(&raw[from..], SIG_KEY) {
        if found.is_some() {
            return None; // a second occurrence: let the reference decide
        }
        found = Some(from + at);
        from += at + SIG_KEY.len();
    }
    let start = found?;
    let value_start = start + SIG_KEY.len();
    let value_len = raw[value_start..].iter().position(|&b| b == b'"')?;
    if value_len != 86 {
        return None;
    }
    let sig_bytes = URL_SAFE_NO_PAD.decode(&raw[value_start..value_start + value_len]).ok()?;
    let sig_arr: [u8; 64] = sig_bytes.as_slice().try_into().ok()?;
    let end = value_start + value_len + 1; // past the closing quote
    let (cut_from, cut_to) = if start > 0 && raw[start - 1] == b',' {
        (start - 1, end)
    } else if end < raw.len() && raw[end] == b',' {
        (start, end + 1)
    } else {
        (start, end)
    };
    let mut msg = Vec::with_capacity(raw.len() - (cut_to - cut_from));
    msg.extend_from_slice(&raw[..cut_from]);
    msg.extend_from_slice(&raw[cut_to..]);
    Some((msg, Signature::from_bytes(&sig_arr)))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Each 32-byte key the acceptance rule admits (`ed25519::strict_key`), None for the others.
fn parse_keys(keys: &[u8]) -> Vec<Option<StrictKey>> {
    keys.chunks_exact(32).map(|k| strict_key(k.try_into().expect("32-byte chunk"))).collect()
}

/// Where a thread writes the bytes of the frames it checks: its part of the caller's buffer, and the
/// offsets (relative to the whole buffer) of each of its frames' slots, one more than frames.
struct RawOut<'a> {
    buf: &'a mut [u8],
    base: usize,
    slot: &'a [i64],
    len: &'a mut [i64],
    sig_at: &'a mut [i64],
}

/// The frames `lo..lo + out.len()`: verdicts into `out`; with `raw`, each frame's bytes into its slot.
#[allow(clippy::too_many_arguments)]
fn check_range(
    lo: usize,
    buf: &[u8],
    raw_off: &[i64],
    raw_len: &[i64],
    sha_off: &[i64],
    sha_len: &[i64],
    keys: &[Option<StrictKey>],
    key_idx: &[i32],
    max_raw: usize,
    out: &mut [u8],
    mut raw: Option<RawOut<'_>>,
) {
    out.fill(NOT_PROVEN);
    if let Some(r) = raw.as_mut() {
        r.len.fill(-1);
        r.sig_at.fill(-1);
    }
    let mut dec = match zstd::bulk::Decompressor::new() {
        Ok(d) => d,
        Err(_) => return, // everything stays NOT_PROVEN
    };
    let mut sigs = Signatures::default();
    let mut scratch: Vec<u8>;
    for j in 0..out.len() {
        let i = lo + j;
        let Some(key) = usize::try_from(key_idx[i]).ok().and_then(|k| keys.get(k)).and_then(|k| k.as_ref()) else {
            continue;
        };
        let (Some(raw_z), Some(sha)) = (field(buf, raw_off[i], raw_len[i]), field(buf, sha_off[i], sha_len[i])) else {
            continue;
        };
        let bytes: &[u8] = match raw.as_mut() {
            None => {
                let Ok(v) = dec.decompress(raw_z, max_raw) else { continue };
                // one zstd frame, of the size it declares: the bytes the reference reads (python-zstandard
                // decompresses the first zstd frame only), as with `raw`
                if zstd::zstd_safe::get_frame_content_size(raw_z).ok().flatten() != Some(v.len() as u64) {
                    continue;
                }
                scratch = v;
                &scratch
            }
            Some(r) => {
                // the frame's slot holds exactly the size its zstd header declares (`wp_zstd_sizes`)
                let (a, b) = (r.slot[j] as usize - r.base, r.slot[j + 1] as usize - r.base);
                let dst = &mut r.buf[a..b];
                if dst.is_empty() || dst.len() > max_raw {
                    continue;
                }
                match dec.decompress_to_buffer(raw_z, dst) {
                    Ok(got) if got == b - a => {}
                    _ => continue,
                }
                r.len[j] = (b - a) as i64;
                if let Some(at) = find(&r.buf[a..b], SIG_MEMBER) {
                    r.sig_at[j] = (at + SIG_MEMBER.len()) as i64;
                }
                &r.buf[a..b]
            }
        };
        if Sha256::digest(bytes).as_slice() != sha {
            if let Some(r) = raw.as_mut() {
                r.len[j] = -1;
            }
            continue;
        }
        let Some((msg, sig)) = split_signature(bytes) else { continue };
        sigs.push(j, &msg, &sig, key);
        if sigs.len() == CHUNK {
            sigs.finish(|k| out[k] = OK);
        }
    }
    sigs.finish(|k| out[k] = OK);
}

fn field(buf: &[u8], off: i64, len: i64) -> Option<&[u8]> {
    let (o, l) = (usize::try_from(off).ok()?, usize::try_from(len).ok()?);
    buf.get(o..o.checked_add(l)?)
}

/// Check `n` stored frames; `out[i]` = 0 proven good, 1 not proven. Frame `i` is zstd bytes
/// `buf[raw_off[i]..+raw_len[i]]` with recorded SHA-256 `buf[sha_off[i]..+sha_len[i]]`, signed by
/// key `key_idx[i]` of the `n_keys` 32-byte keys at `keys` (negative: unknown device).
/// Work is split over `threads` OS threads. Returns 0, or -1 on a null pointer.
///
/// # Safety
/// Every pointer must be valid for the lengths described above (`buf` for `buf_len` bytes).
#[no_mangle]
pub unsafe extern "C" fn wp_check_frames(
    n: usize,
    buf: *const u8,
    buf_len: usize,
    raw_off: *const i64,
    raw_len: *const i64,
    sha_off: *const i64,
    sha_len: *const i64,
    keys: *const u8,
    n_keys: usize,
    key_idx: *const i32,
    max_raw: usize,
    threads: usize,
    out: *mut u8,
) -> i32 {
    wp_check_frames_raw(n, buf, buf_len, raw_off, raw_len, sha_off, sha_len, keys, n_keys, key_idx, max_raw, threads,
                        out, std::ptr::null_mut(), 0, std::ptr::null(), std::ptr::null_mut(), std::ptr::null_mut())
}

/// The size each stored frame declares in its zstd header (`ZSTD_getFrameContentSize` of the first zstd
/// frame): `out[i]`, or -1 when it is unreadable, declares none, or more than `max_raw` bytes.
///
/// # Safety
/// As `wp_check_frames` for `buf`, `raw_off` and `raw_len`; `out` valid for `n` values.
#[no_mangle]
pub unsafe extern "C" fn wp_zstd_sizes(
    n: usize,
    buf: *const u8,
    buf_len: usize,
    raw_off: *const i64,
    raw_len: *const i64,
    max_raw: usize,
    out: *mut i64,
) -> i32 {
    if n == 0 {
        return 0;
    }
    if buf.is_null() || raw_off.is_null() || raw_len.is_null() || out.is_null() {
        return -1;
    }
    let buf = slice::from_raw_parts(buf, buf_len);
    let (raw_off, raw_len) = (slice::from_raw_parts(raw_off, n), slice::from_raw_parts(raw_len, n));
    let out = slice::from_raw_parts_mut(out, n);
    for i in 0..n {
        out[i] = field(buf, raw_off[i], raw_len[i])
            .and_then(|z| zstd::zstd_safe::get_frame_content_size(z).ok().flatten())
            .filter(|&s| s <= max_raw as u64)
            .map_or(-1, |s| s as i64);
    }
    0
}

/// `wp_check_frames`, handing back each frame's bytes: frame `i` is decompressed into
/// `raw_buf[slot[i]..slot[i + 1]]` (sized by the caller from `wp_zstd_sizes`; an empty slot is not
/// decompressed, so not proven), `raw_out_len[i]` = its length when it decompressed to exactly its slot
/// and hashes to the recorded SHA-256 (else -1), and `sig_at[i]` = the offset in it just past the first
/// `,"sig":"` (else -1). With a null `raw_buf`, only the verdicts.
///
/// # Safety
/// As `wp_check_frames`; `slot` holds `n + 1` non-decreasing offsets, `slot[n] <= raw_cap`, `raw_buf` is
/// valid for `raw_cap` bytes, and `raw_out_len`, `sig_at` for `n` values.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn wp_check_frames_raw(
    n: usize,
    buf: *const u8,
    buf_len: usize,
    raw_off: *const i64,
    raw_len: *const i64,
    sha_off: *const i64,
    sha_len: *const i64,
    keys: *const u8,
    n_keys: usize,
    key_idx: *const i32,
    max_raw: usize,
    threads: usize,
    out: *mut u8,
    raw_buf: *mut u8,
    raw_cap: usize,
    slot: *const i64,
    raw_out_len: *mut i64,
    sig_at: *mut i64,
) -> i32 {
    if n == 0 {
        return 0;
    }
    if buf.is_null() || raw_off.is_null() || raw_len.is_null() || sha_off.is_null() || sha_len.is_null()
        || key_idx.is_null() || out.is_null() || (keys.is_null() && n_keys > 0)
    {
        return -1;
    }
    let want_raw = !raw_buf.is_null();
    if want_raw && (slot.is_null() || raw_out_len.is_null() || sig_at.is_null()) {
        return -1;
    }
    let buf = slice::from_raw_parts(buf, buf_len);
    let (raw_off, raw_len) = (slice::from_raw_parts(raw_off, n), slice::from_raw_parts(raw_len, n));
    let (sha_off, sha_len) = (slice::from_raw_parts(sha_off, n), slice::from_raw_parts(sha_len, n));
    let key_idx = slice::from_raw_parts(key_idx, n);
    let keys = if n_keys == 0 { Vec::new() } else { parse_keys(slice::from_raw_parts(keys, n_keys * 32)) };
    let out = slice::from_raw_parts_mut(out, n);
    let threads = threads.clamp(1, 64).min(n);
    let per = n.div_ceil(threads);
    let mut parts: Vec<Option<RawOut<'_>>> = Vec::new();
    if want_raw {
        let slot = slice::from_raw_parts(slot, n + 1);
        if slot[0] < 0 || slot.windows(2).any(|w| w[1] < w[0]) || usize::try_from(slot[n]).map_or(true, |e| e > raw_cap) {
            return -1;
        }
        let mut rest = slice::from_raw_parts_mut(raw_buf, raw_cap);
        let mut lens = slice::from_raw_parts_mut(raw_out_len, n);
        let mut sigs = slice::from_raw_parts_mut(sig_at, n);
        let mut at = 0usize;
        for t in 0..threads {
            let (lo, hi) = ((t * per).min(n), ((t + 1) * per).min(n));
            let end = slot[hi] as usize;
            let (mine, r) = std::mem::take(&mut rest).split_at_mut(end - at);
            let (l, lr) = std::mem::take(&mut lens).split_at_mut(hi - lo);
            let (s, sr) = std::mem::take(&mut sigs).split_at_mut(hi - lo);
            parts.push(Some(RawOut { buf: mine, base: at, slot: &slot[lo..=hi], len: l, sig_at: s }));
            (rest, lens, sigs, at) = (r, lr, sr, end);
        }
    } else {
        parts.resize_with(threads, || None);
    }
    std::thread::scope(|s| {
        for ((t, part), raw) in out.chunks_mut(per).enumerate().zip(parts) {
            let keys = &keys;
            s.spawn(move || {
                check_range(t * per, buf, raw_off, raw_len, sha_off, sha_len, keys, key_idx, max_raw, part, raw)
            });
        }
    });
    0
}

/// Verify `n` signatures: message `i` is `msgs[msg_off[i]..msg_off[i + 1]]`, its signature the 64
/// bytes at `sigs + 64 i`, its key the 32 bytes at `keys + 32 i`. `out[i]` = 0 good, 1 not proven.
/// Returns 0, or -1 on a null pointer.
///
/// # Safety
/// `msg_off` must hold `n + 1` non-decreasing offsets into `msgs` (valid for `msg_off[n]` bytes);
/// `sigs`, `keys` and `out` must be valid for `64 n`, `32 n` and `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn wp_verify_batch(
    n: usize,
    msgs: *const u8,
    msg_off: *const i64,
    sigs: *const u8,
    keys: *const u8,
    out: *mut u8,
) -> i32 {
    if n == 0 {
        return 0;
    }
    if msgs.is_null() || msg_off.is_null() || sigs.is_null() || keys.is_null() || out.is_null() {
        return -1;
    }
    let offs = slice::from_raw_parts(msg_off, n + 1);
    let Ok(total) = usize::try_from(offs[n]) else { return -1 };
    let msgs = slice::from_raw_parts(msgs, total);
    let sigs = slice::from_raw_parts(sigs, n * 64);
    let keys = slice::from_raw_parts(keys, n * 32);
    let mut distinct: HashMap<&[u8], Option<StrictKey>> = HashMap::new(); // keys repeat: one per device
    for k in keys.chunks_exact(32) {
        distinct.entry(k).or_insert_with(|| strict_key(k.try_into().expect("32-byte chunk")));
    }
    let out = slice::from_raw_parts_mut(out, n);
    out.fill(NOT_PROVEN);
    let mut checked = Signatures::default();
    for i in 0..n {
        let Some(key) = distinct[&keys[32 * i..32 * i + 32]].as_ref() else { continue };
        let Some(msg) = usize::try_from(offs[i]).ok().zip(usize::try_from(offs[i + 1]).ok())
            .and_then(|(a, b)| msgs.get(a..b)) else { continue };
        let sig = Signature::from_bytes(sigs[64 * i..64 * i + 64].try_into().expect("64 bytes"));
        checked.push(i, msg, &sig, key);
        if checked.len() == CHUNK {
            checked.finish(|k| out[k] = OK);
        }
    }
    checked.finish(|k| out[k] = OK);
    0
}

/// SHA-256 of each range `buf[offs[i]..offs[i + 1]]` into `out[32 i..]`, on `threads` threads.
/// Returns 0, or -1 on a null pointer or offsets that are not non-decreasing within `buf_len`.
///
/// # Safety
/// `offs` must hold `n + 1` values, `buf` be valid for `buf_len` bytes and `out` for `32 n` bytes.
#[no_mangle]
pub unsafe extern "C" fn wp_sha256_ranges(
    n: usize,
    buf: *const u8,
    buf_len: usize,
    offs: *const i64,
    threads: usize,
    out: *mut u8,
) -> i32 {
    if n == 0 {
        return 0;
    }
    if buf.is_null() || offs.is_null() || out.is_null() {
        return -1;
    }
    let buf = slice::from_raw_parts(buf, buf_len);
    let offs = slice::from_raw_parts(offs, n + 1);
    if offs.windows(2).any(|w| w[0] < 0 || w[1] < w[0]) || usize::try_from(offs[n]).map_or(true, |e| e > buf_len) {
        return -1;
    }
    let out = slice::from_raw_parts_mut(out, 32 * n);
    let threads = threads.clamp(1, 64).min(n);
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        for (t, part) in out.chunks_mut(32 * per).enumerate() {
            s.spawn(move || {
                for (j, dst) in part.chunks_exact_mut(32).enumerate() {
                    let i = t * per + j;
                    dst.copy_from_slice(&Sha256::digest(&buf[offs[i] as usize..offs[i + 1] as usize]));
                }
            });
        }
    });
    0
}

/// RFC 6962 Merkle Tree Hash of `level[..m]` (leaf hashes), computed in place bottom-up: node `i` of the
/// next level is SHA-256(0x01 || 2i || 2i+1) and an odd last node moves up unchanged, which gives the
/// same heads as the RFC's recursive split at the largest power of two below `m`.
fn root_in_place(level: &mut [[u8; 32]], mut m: usize) -> [u8; 32] {
    while m > 1 {
        let half = m / 2;
        for i in 0..half {
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(level[2 * i]);
            h.update(level[2 * i + 1]);
            level[i] = h.finalize().into();
        }
        if m % 2 == 1 {
            level[half] = level[m - 1];
        }
        m = half + m % 2;
    }
    level[0]
}

/// The RFC 6962 root of each run `hashes[starts[b]..starts[b + 1]]` (32-byte leaf hashes) into `out[32 b..]`;
/// an empty run gives SHA-256 of the empty string. The runs are shared out over `threads` threads by leaf count.
/// Returns 0, or -1 on bad pointers or starts.
///
/// # Safety
/// `starts` must hold `nb + 1` values, `hashes` be valid for `32 starts[nb]` bytes and `out` for `32 nb`.
#[no_mangle]
pub unsafe extern "C" fn wp_merkle_roots(nb: usize, hashes: *const u8, starts: *const i64, threads: usize,
                                         out: *mut u8) -> i32 {
    if nb == 0 {
        return 0;
    }
    if starts.is_null() || out.is_null() {
        return -1;
    }
    let starts = slice::from_raw_parts(starts, nb + 1);
    if starts.windows(2).any(|w| w[0] < 0 || w[1] < w[0]) || (hashes.is_null() && starts[nb] > 0) {
        return -1;
    }
    let total = starts[nb] as usize;
    let leaves: &[[u8; 32]] = if total == 0 { &[] } else { slice::from_raw_parts(hashes as *const [u8; 32], total) };
    let out = slice::from_raw_parts_mut(out as *mut [u8; 32], nb);
    let threads = threads.clamp(1, 64).min(nb);
    // cut the runs where the leaves before reach each thread's share
    let mut cuts = vec![0usize];
    for t in 1..threads {
        let want = (starts[0] as usize + (total - starts[0] as usize) * t / threads) as i64;
        let at = starts.partition_point(|&s| s < want).min(nb).max(*cuts.last().unwrap());
        cuts.push(at);
    }
    cuts.push(nb);
    std::thread::scope(|s| {
        let mut rest = out;
        for w in cuts.windows(2) {
            let (mine, r) = std::mem::take(&mut rest).split_at_mut(w[1] - w[0]);
            rest = r;
            let (lo, hi) = (w[0], w[1]);
            s.spawn(move || roots_of(leaves, &starts[lo..=hi], mine));
        }
    });
    0
}

fn roots_of(leaves: &[[u8; 32]], starts: &[i64], out: &mut [[u8; 32]]) {
    let widest = starts.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(0);
    let mut level = vec![[0u8; 32]; widest.max(1)];
    for b in 0..out.len() {
        let (lo, hi) = (starts[b] as usize, starts[b + 1] as usize);
        out[b] = if hi == lo {
            Sha256::digest([]).into()
        } else {
            level[..hi - lo].copy_from_slice(&leaves[lo..hi]);
            root_in_place(&mut level, hi - lo)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_removes_the_member_between_others() {
        let sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
        let raw = format!("{{\"a\":1,\"sig\":\"{sig}\",\"z\":2}}");
        let (msg, s) = split_signature(raw.as_bytes()).unwrap();
        assert_eq!(msg, b"{\"a\":1,\"z\":2}");
        assert_eq!(s.to_bytes(), [7u8; 64]);
    }

    #[test]
    fn roots_follow_rfc6962_for_small_trees() {
        let leaf = |i: u8| -> [u8; 32] { Sha256::digest([0u8, i]).into() };
        let node = |l: [u8; 32], r: [u8; 32]| -> [u8; 32] {
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(l);
            h.update(r);
            h.finalize().into()
        };
        let ls: Vec<[u8; 32]> = (0..3).map(leaf).collect();
        // MTH of 3 leaves = node(node(l0, l1), l2)
        let want = node(node(ls[0], ls[1]), ls[2]);
        let mut level = ls.clone();
        assert_eq!(root_in_place(&mut level, 3), want);
    }

    #[test]
    fn split_refuses_two_members_or_a_short_value() {
        let sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
        let two = format!("{{\"sig\":\"{sig}\",\"x\":{{\"sig\":\"{sig}\"}}}}");
        assert!(split_signature(two.as_bytes()).is_none());
        assert!(split_signature(b"{\"sig\":\"abc\"}").is_none());
        assert!(split_signature(b"{\"sig\":\"").is_none());
        assert!(split_signature(b"").is_none());
    }
}
