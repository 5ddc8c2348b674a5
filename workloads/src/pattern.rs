//! The deterministic byte pattern producers write and consumers verify byte for byte.
//! Byte at stream offset `i` is `PATTERN[i % PERIOD]`; the period is prime so that it never
//! lines up with message or page sizes.

pub const PERIOD: usize = 251;

/// Byte at stream offset `i`.
#[inline]
pub fn byte_at(i: u64) -> u8 {
    let j = (i % PERIOD as u64) as u8;
    j.wrapping_mul(7).wrapping_add(13) ^ 0x5a
}

/// A buffer of `len + PERIOD` pattern bytes starting at offset 0: any window of `len` bytes
/// at stream offset `off` is `&buf[off % PERIOD..][..len]`.
pub struct PatternBuf {
    buf: Vec<u8>,
}

impl PatternBuf {
    pub fn new(len: usize) -> Self {
        Self { buf: (0..(len + PERIOD) as u64).map(byte_at).collect() }
    }

    /// The expected bytes for `len` bytes at stream offset `off` (len <= the construction length).
    pub fn window(&self, off: u64, len: usize) -> &[u8] {
        let start = (off % PERIOD as u64) as usize;
        &self.buf[start..start + len]
    }
}

/// Checks `got` against the pattern at stream offset `off`; returns the offset of the first
/// wrong byte.
pub fn first_mismatch(pat: &PatternBuf, off: u64, got: &[u8]) -> Option<u64> {
    let want = pat.window(off, got.len());
    if want == got {
        return None;
    }
    let i = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0);
    Some(off + i as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_match_byte_at() {
        let p = PatternBuf::new(1000);
        for off in [0u64, 1, 250, 251, 12345] {
            let w = p.window(off, 1000);
            for (k, b) in w.iter().enumerate() {
                assert_eq!(*b, byte_at(off + k as u64));
            }
        }
    }

    #[test]
    fn mismatch_is_located() {
        let p = PatternBuf::new(64);
        let mut got = p.window(1000, 64).to_vec();
        assert_eq!(first_mismatch(&p, 1000, &got), None);
        got[17] ^= 1;
        assert_eq!(first_mismatch(&p, 1000, &got), Some(1017));
    }
}
