//! circllhist's log-linear histogram, as Envoy uses it: a sample goes into a bin of two
//! significant decimal digits (10 falls in [10, 11), 1234 in [1200, 1300)); quantiles,
//! bucket counts and the sum are approximated from the bins exactly as Envoy computes them,
//! so `/stats` prints the same numbers for the same samples.

/// Envoy's quantiles (`supported_quantiles`), in the order it prints them.
pub const SUPPORTED_QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// Envoy's default histogram bucket bounds (`supported_buckets`).
pub const DEFAULT_BUCKETS: [f64; 20] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0, 7200000.0,
];

/// One bin: the value's first two significant digits (`val`, 10..=99, or 0 for the value
/// 0) and its decimal exponent; the bin is `[val/10 * 10^exp, (val+1)/10 * 10^exp)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    val: i8,
    exp: i8,
}

impl Bin {
    /// The bin of an integer sample (circllhist's `hist_insert_intscale` with scale 0).
    pub fn of(value: u64) -> Bin {
        if value == 0 {
            return Bin { val: 0, exp: 0 };
        }
        let (mut v, mut exp) = (value, 1i32);
        if v < 10 {
            v *= 10;
            exp -= 1;
        }
        while v >= 100 {
            v /= 10;
            exp += 1;
        }
        Bin { val: v as i8, exp: exp as i8 }
    }

    /// The bin's lower edge.
    pub fn left(self) -> f64 {
        if self.val == 0 { 0.0 } else { f64::from(self.val) * 10f64.powi(i32::from(self.exp) - 1) }
    }

    /// The bin's width (0 for the zero bin).
    pub fn width(self) -> f64 {
        if self.val == 0 { 0.0 } else { 10f64.powi(i32::from(self.exp) - 1) }
    }

    /// The point that stands for the bin's samples in sums: circllhist 0.3's midpoint
    /// `B0 + (B1 - B0) * B0 / (B0 + B1)` (10.476... for [10, 11)), 0 for the zero bin.
    pub fn midpoint(self) -> f64 {
        let (b0, b1) = (self.left(), self.left() + self.width());
        if self.val == 0 { 0.0 } else { b0 + (b1 - b0) * b0 / (b0 + b1) }
    }

    fn key(self) -> i32 {
        if self.val == 0 { i32::MIN } else { i32::from(self.exp) * 100 + i32::from(self.val) }
    }
}

/// Samples counted by bin, bins in ascending order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bins {
    bins: Vec<(Bin, u64)>,
}

impl Bins {
    /// No samples.
    pub fn new() -> Bins {
        Bins::default()
    }

    /// Counts one sample.
    pub fn record(&mut self, value: u64) {
        self.add(Bin::of(value), 1);
    }

    fn add(&mut self, bin: Bin, count: u64) {
        match self.bins.binary_search_by_key(&bin.key(), |(b, _)| b.key()) {
            Ok(i) => self.bins[i].1 += count,
            Err(i) => self.bins.insert(i, (bin, count)),
        }
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Bins) {
        for &(bin, count) in &other.bins {
            self.add(bin, count);
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    /// The number of samples.
    pub fn count(&self) -> u64 {
        self.bins.iter().map(|(_, n)| n).sum()
    }

    /// The bins with their counts, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (Bin, u64)> + '_ {
        self.bins.iter().copied()
    }

    /// The approximate sum: each sample counts as its bin's midpoint (circllhist's
    /// `hist_approx_sum`).
    pub fn approx_sum(&self) -> f64 {
        self.bins.iter().map(|&(bin, n)| bin.midpoint() * n as f64).sum()
    }

    /// The samples at or below `bound` as circllhist 0.3 counts them
    /// (`hist_approx_count_below`): a bin counts whole once its lower edge is at or below
    /// the bound, so `le="10"` counts the samples in [10, 11).
    pub fn count_below(&self, bound: f64) -> u64 {
        self.bins.iter().take_while(|(bin, _)| bin.left() <= bound).map(|(_, n)| n).sum()
    }

    /// The quantiles `qs` (each in [0, 1], ascending), as circllhist approximates them:
    /// the samples of a bin are taken as spread evenly inside it.
    pub fn quantiles(&self, qs: &[f64]) -> Vec<f64> {
        let total = self.count();
        if total == 0 {
            return vec![f64::NAN; qs.len()];
        }
        qs.iter().map(|&q| self.quantile(q, total)).collect()
    }

    fn quantile(&self, q: f64, total: u64) -> f64 {
        // The rank of the sample wanted (1-based), as a type-1 quantile: the smallest
        // sample with at least q of the samples at or below it.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut below = 0u64;
        for &(bin, n) in &self.bins {
            if rank <= below + n {
                let k = rank - below;
                // The k-th of n samples spread evenly inside the bin.
                return bin.left() + bin.width() * k as f64 / (n + 1) as f64;
            }
            below += n;
        }
        self.bins.last().map_or(f64::NAN, |(bin, _)| bin.left() + bin.width())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_have_two_significant_digits() {
        assert_eq!((Bin::of(10).left(), Bin::of(10).width()), (10.0, 1.0));
        assert_eq!((Bin::of(5).left(), Bin::of(5).width()), (5.0, 0.1));
        assert_eq!((Bin::of(1234).left(), Bin::of(1234).width()), (1200.0, 100.0));
        assert_eq!((Bin::of(99).left(), Bin::of(100).left()), (99.0, 100.0));
        assert_eq!(Bin::of(0).left(), 0.0);
        assert_eq!(Bin::of(u64::MAX).left(), 1.8e19);
    }

    #[test]
    fn three_tens_spread_inside_their_bin_as_envoy_prints_them() {
        let mut b = Bins::new();
        for _ in 0..3 {
            b.record(10);
        }
        let q = b.quantiles(&SUPPORTED_QUANTILES);
        assert_eq!(q[..4], [10.25, 10.25, 10.5, 10.75]);
        assert_eq!(q[9], 10.75);
        // Envoy's Prometheus output prints this sum as 31.428571428571430601550673600286.
        assert_eq!(b.approx_sum(), 31.42857142857143);
        assert_eq!(b.count_below(5.0), 0);
        assert_eq!(b.count_below(10.0), 3);
    }

    #[test]
    fn bins_stay_sorted_when_merged() {
        let (mut a, mut b) = (Bins::new(), Bins::new());
        a.record(500);
        a.record(3);
        b.record(0);
        b.record(40);
        a.merge(&b);
        let lefts: Vec<f64> = a.iter().map(|(bin, _)| bin.left()).collect();
        assert_eq!(lefts, [0.0, 3.0, 40.0, 500.0]);
        assert_eq!(a.count(), 4);
    }
}
