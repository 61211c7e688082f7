//! Random client input for the protocols' noise tests: real command fragments mixed with runs
//! of random bytes, so the sessions get both plausible and hostile input.

use rand::Rng;
use rand::rngs::StdRng;

/// Up to `max_parts` parts, each a fragment (80 %) or up to `max_random` random bytes.
pub fn random_input(
    rng: &mut StdRng,
    fragments: &[&[u8]],
    max_parts: usize,
    max_random: usize,
) -> Vec<u8> {
    let mut input = Vec::new();
    for _ in 0..rng.gen_range(1..max_parts) {
        if rng.gen_bool(0.8) {
            input.extend_from_slice(fragments[rng.gen_range(0..fragments.len())]);
        } else {
            let n = rng.gen_range(1..max_random);
            input.extend((0..n).map(|_| rng.r#gen::<u8>()));
        }
    }
    input
}
