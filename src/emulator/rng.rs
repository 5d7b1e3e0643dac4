//! A tiny deterministic pseudo-random generator (splitmix64) for the emulator's seed
//! generator and analysts. Written here rather than taken from a crate: the emulator
//! only needs reproducible variety, and the exact sequence is part of what "same seed,
//! byte-identical output" promises, so it must not change with a dependency's version.
//! Not for anything secret.

/// splitmix64 (Steele, Lea, Flood 2014): one add and three xor-shift-multiplies per
/// output; every seed, zero included, gives a full-period sequence.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`). Multiply-shift instead of `%`: no division, and the
    /// bias (< n / 2^64) is irrelevant for test data.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // The top 53 bits make an exact f64 in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Picks by integer weight, so distributions read as percentages in the tables.
    pub fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut at = self.below(total);
        for (item, weight) in items {
            if at < u64::from(*weight) {
                return item;
            }
            at -= u64::from(*weight);
        }
        unreachable!("at < total")
    }

    /// `n` lowercase hex digits.
    pub fn hex(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n);
        while out.len() < n {
            let word = format!("{:016x}", self.next_u64());
            out.push_str(&word[..(n - out.len()).min(16)]);
        }
        out
    }

    /// A version-4-shaped UUID, as Entra and ARM ids look.
    pub fn uuid(&mut self) -> String {
        let h = self.hex(32);
        let variant = ["8", "9", "a", "b"][self.below(4) as usize];
        format!(
            "{}-{}-4{}-{}{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            variant,
            &h[17..20],
            &h[20..32]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_first_outputs() {
        // Reference values of splitmix64 seeded with 0 (as in the published C code).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn helpers_stay_in_range() {
        let mut r = SplitMix64::new(7);
        for _ in 0..10_000 {
            assert!(r.below(3) < 3);
            let v = r.range(5, 9);
            assert!((5..=9).contains(&v));
        }
        let id = r.uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
