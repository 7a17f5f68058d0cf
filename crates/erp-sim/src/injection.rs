//! Injected trouble: 503s on a share of attempts, which a retry can get past, and a latency
//! per key. Both are drawn from a hash of the idempotency key, not from a random generator, so
//! a run with the same keys meets the same errors and waits every time.

use std::time::Duration;

/// FNV-1a: stable across Rust releases and platforms, unlike `DefaultHasher`, so a run with
/// the same keys injects the same errors and latencies every time.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 finaliser: spreads FNV's weak low bits before they are reduced modulo.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A pseudo-random number fixed by the key and a salt.
fn draw(key: &str, salt: u64) -> u64 {
    mix(fnv1a(key.as_bytes()) ^ mix(salt))
}

const LATENCY_SALT: u64 = 0x4c41_5445_4e43_5900;
/// Error draws use `ERROR_SALT + attempt`, so each retry of a key is a fresh draw.
const ERROR_SALT: u64 = 0x4552_524f_5200_0000;

/// Whether attempt number `attempt` (from 1) under `key` fails with an injected 503.
pub(crate) fn injects_error(key: &str, attempt: u32, permille: u32) -> bool {
    draw(key, ERROR_SALT.wrapping_add(u64::from(attempt))) % 1000 < u64::from(permille)
}

/// Where in `min..=max` the answer to `key` lands.
pub(crate) fn latency(key: &str, min: Duration, max: Duration) -> Duration {
    let span = u64::try_from(max.saturating_sub(min).as_micros()).unwrap_or(u64::MAX);
    if span == 0 {
        return min;
    }
    min + Duration::from_micros(draw(key, LATENCY_SALT) % span.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_do_not_change_between_builds() {
        // The FNV-1a 64 test vectors, then one draw pinned as first computed.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(draw("k7", LATENCY_SALT), 0x3d06_84fb_34d9_b5da);
    }

    #[test]
    fn an_empty_latency_range_is_its_lower_bound() {
        let ms = Duration::from_millis;
        assert_eq!(latency("k", ms(5), ms(5)), ms(5));
        assert_eq!(latency("k", ms(5), ms(1)), ms(5));
    }
}
