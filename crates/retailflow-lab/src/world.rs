//! The generated world: locations, SKUs with prices, tax codes and Zipf popularity, and a
//! seeded random source. Everything is derived from the scenario seed.

use super::spec::{Fulfilment, Scenario};
use retailflow::domain::{BusinessDay, Currency};

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in [lo, hi].
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability p.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Sampling ranks 0..n with probability proportional to 1 / (rank + 1)^s.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in cdf.iter_mut() {
            *c /= acc;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

#[derive(Clone, Debug)]
pub struct SkuInfo {
    pub id: String,
    pub price: i64,
    pub tax: usize,
}

#[derive(Clone, Debug)]
pub struct ChannelInfo {
    pub name: String,
    /// Indices into `World::locations`.
    pub locations: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct World {
    /// Stores first, then DCs.
    pub locations: Vec<String>,
    pub stores: usize,
    pub skus: Vec<SkuInfo>,
    pub tax: Vec<(String, i64)>,
    pub channels: Vec<ChannelInfo>,
    pub day: BusinessDay,
    pub currency: Currency,
    pub assortment: usize,
    pub store_zipf: Zipf,
    pub web_zipf: Zipf,
    pub tills: usize,
}

impl World {
    pub fn build(s: &Scenario) -> Result<World, String> {
        let w = &s.world;
        let mut rng = Rng::new(s.seed ^ 0x77);
        let mut locations: Vec<String> = (1..=w.stores).map(|i| format!("S{i:04}")).collect();
        locations.extend((1..=w.dcs).map(|i| format!("DC{i}")));
        let skus = (0..w.skus)
            .map(|i| SkuInfo {
                id: format!("SKU-{i:06}"),
                price: rng.range(w.price[0], w.price[1]),
                tax: rng.below(w.tax.len() as u64) as usize,
            })
            .collect();
        let stores: Vec<usize> = (0..w.stores).collect();
        let dcs: Vec<usize> = (w.stores..w.stores + w.dcs).collect();
        let channels = w
            .channels
            .iter()
            .map(|c| ChannelInfo {
                name: c.name.clone(),
                locations: match c.fulfilment {
                    Fulfilment::Dcs => dcs.clone(),
                    Fulfilment::Stores => stores.clone(),
                    Fulfilment::All => dcs.iter().chain(stores.iter()).copied().collect(),
                },
            })
            .collect();
        Ok(World {
            locations,
            stores: w.stores,
            skus,
            tax: w.tax.iter().map(|t| (t.code.clone(), t.rate_bp)).collect(),
            channels,
            day: BusinessDay::parse(&w.business_day)?,
            currency: Currency::parse(&w.currency)?,
            assortment: w.store_assortment,
            store_zipf: Zipf::new(w.store_assortment, w.zipf),
            web_zipf: Zipf::new(w.skus, w.zipf),
            tills: w.tills.max(1),
        })
    }

    pub fn is_store(&self, loc: usize) -> bool {
        loc < self.stores
    }

    pub fn dcs(&self) -> std::ops::Range<usize> {
        self.stores..self.locations.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_prefers_low_ranks() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(1);
        let mut top10 = 0;
        for _ in 0..10_000 {
            if z.sample(&mut rng) < 10 {
                top10 += 1;
            }
        }
        // H(10)/H(1000) = 2.929/7.485 = 39%.
        assert!((3500..4300).contains(&top10), "{top10}");
    }

    #[test]
    fn rng_ranges_are_inclusive() {
        let mut rng = Rng::new(3);
        let mut seen = [false; 3];
        for _ in 0..100 {
            seen[(rng.range(5, 7) - 5) as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
    }
}
