//! What `make fuzz` does for the unit reader, the mapping and the printed TOML, in small and
//! deterministic for `make test`: Debian's units (the fuzz seeds), mutated a few thousand
//! ways (bytes flipped, lines cut, duplicated and swapped, values replaced by the odd ones a
//! mapping must refuse), each through [`stewardctl::fuzz_unit_file`]: an error naming the
//! file and line, or a config that checks, never a panic.

use std::fs;
use std::path::Path;

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/unit_file");

/// xorshift64*: the same mutations on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit at the edges of what the mapping takes.
const ODD: &[&str] = &[
    "",
    "infinity",
    "0",
    "-1",
    "18446744073709551616",
    "yes",
    "forking",
    "oneshot",
    "@",
    "-/bin/true $X ${Y} $$",
    "/bin/sh -c 'exit 1' ; /bin/true",
    "%i%I%n%N%p%P%u%h%%",
    "%Z",
    "[::1]:99999",
    "../../etc",
    "/abs/dir",
    "a\\",
    "\"unterminated",
    "LISTEN_FDS=3",
    "2min 3s 400ms",
    "0777777",
    "tty",
    "socket",
    "append:/var/log/x",
];

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = seed.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    for _ in 0..1 + rng.below(4) {
        let n = lines.len();
        match rng.below(6) {
            0 => {
                let i = rng.below(n);
                if !lines[i].is_empty() {
                    let at = rng.below(lines[i].len());
                    lines[i][at] = rng.next() as u8;
                }
            }
            1 => {
                let i = rng.below(n);
                lines.remove(i);
                if lines.is_empty() {
                    lines.push(Vec::new());
                }
            }
            2 => {
                let i = rng.below(n);
                let copy = lines[i].clone();
                lines.insert(rng.below(n), copy);
            }
            3 => {
                let (i, j) = (rng.below(n), rng.below(n));
                lines.swap(i, j);
            }
            _ => {
                let i = rng.below(n);
                if let Some(eq) = lines[i].iter().position(|&b| b == b'=') {
                    let odd = ODD[rng.below(ODD.len())].as_bytes();
                    lines[i].truncate(eq + 1);
                    lines[i].extend_from_slice(odd);
                }
            }
        }
    }
    lines.join(&b'\n')
}

#[test]
fn mutated_debian_units_never_panic_the_reader_the_mapping_or_the_printer() {
    let mut seeds: Vec<_> = fs::read_dir(SEEDS)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for path in &seeds {
        let seed = fs::read(Path::new(path)).unwrap();
        for _ in 0..300 {
            stewardctl::fuzz_unit_file(&mutate(&seed, &mut rng));
        }
    }
}
