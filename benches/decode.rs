//! Decode benchmark: time per uplink for every bundled declarative profile and for a
//! JavaScript codec, and heap growth over a million decodes (a counting global allocator).
//!
//! Run: `cargo bench --bench decode` (add `-- --quick` for a short run). Prints a Markdown table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use messnetz::profiles::{Profile, ProfileSet};

/// Counts allocations and live bytes, so that growth over many decodes is visible.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A codec in the style of vendor repositories: byte arithmetic, toFixed, a result object.
const JS_PROFILE: &str = r#"
id = "bench-js"
vendor = "Bench"
model = "JS"
reference = "benchmark codec"

[[layouts]]
kind = "javascript"
script = '''
function decodeUplink(input) {
  var b = input.bytes;
  var data = {};
  data.battery = ((b[0] << 8 | b[1]) & 0x3FFF) / 1000;
  var t = (b[2] << 8 | b[3]);
  if (t & 0x8000) t -= 0x10000;
  data.temperature = (t / 100).toFixed(2);
  data.humidity = ((b[4] << 8 | b[5]) / 10).toFixed(1);
  return { data: data, warnings: [], errors: [] };
}
'''

[[layouts.fields]]
quantity = "battery_voltage"
pointer = "/battery"

[[layouts.fields]]
quantity = "air_temperature"
pointer = "/temperature"

[[layouts.fields]]
quantity = "relative_humidity"
pointer = "/humidity"

[[examples]]
fport = 2
payload_hex = "CBF6 0B0D 0376 01 0ADD 7FFF"
readings = [
    { quantity = "battery_voltage", value = 3.062 },
    { quantity = "air_temperature", value = 28.29 },
    { quantity = "relative_humidity", value = 88.6 },
]
"#;

/// Median nanoseconds per decode over `batches` batches of `per_batch` decodes.
fn median_ns(profile: &Profile, uplinks: &[(Option<u8>, &[u8])], batches: usize, per_batch: usize) -> f64 {
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for i in 0..per_batch {
                let (port, bytes) = uplinks[i % uplinks.len()];
                let d = profile.decode_bytes(port, bytes);
                black_box(&d);
            }
            start.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// Allocations per decode and live heap growth (bytes) over `n` decodes.
fn allocations(profile: &Profile, uplinks: &[(Option<u8>, &[u8])], n: usize) -> (f64, i64) {
    // One decode first, so that lazily built state is not counted as growth.
    let _ = profile.decode_bytes(uplinks[0].0, uplinks[0].1);
    let (a0, l0) = (ALLOCS.load(Ordering::Relaxed), LIVE.load(Ordering::Relaxed));
    for i in 0..n {
        let (port, bytes) = uplinks[i % uplinks.len()];
        black_box(profile.decode_bytes(port, bytes)).ok();
    }
    let (a1, l1) = (ALLOCS.load(Ordering::Relaxed), LIVE.load(Ordering::Relaxed));
    ((a1 - a0) as f64 / n as f64, l1 - l0)
}

fn main() {
    // JavaScript codecs run in worker processes of the messnetz binary, not of this one.
    messnetz::profiles::js::set_worker_program(env!("CARGO_BIN_EXE_messnetz").into());
    let quick = std::env::args().any(|a| a == "--quick");
    let (batches, per_batch, million) = if quick { (11, 2_000, 100_000) } else { (31, 20_000, 1_000_000) };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sensor-profiles");
    let set = match ProfileSet::load_dir(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bundled profiles do not load: {e:?}");
            std::process::exit(1);
        }
    };
    println!("| profile | layout | median ns/uplink | allocations/uplink | heap growth over {million} decodes |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let mut worst: f64 = 0.0;
    for p in set.iter() {
        let uplinks: Vec<(Option<u8>, &[u8])> = p.example_uplinks().collect();
        if uplinks.is_empty() {
            continue; // JSON profiles: their payloads are JSON documents, decoded elsewhere
        }
        let ns = median_ns(p, &uplinks, batches, per_batch);
        let (allocs, growth) = allocations(p, &uplinks, million);
        worst = worst.max(ns);
        println!("| {} | declarative | {ns:.0} | {allocs:.2} | {growth} B |", p.id());
    }
    let js = match Profile::from_toml(Path::new("bench-js.toml"), JS_PROFILE) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("benchmark codec does not load: {e:?}");
            std::process::exit(1);
        }
    };
    let uplinks: Vec<(Option<u8>, &[u8])> = js.example_uplinks().collect();
    let js_ns = median_ns(&js, &uplinks, batches, per_batch / 10);
    let (allocs, growth) = allocations(&js, &uplinks, million / 10);
    println!(
        "| bench-js (LHT65-style codec) | javascript | {js_ns:.0} | {allocs:.2} | {growth} B (over {} decodes) |",
        million / 10
    );
    imported_codecs(batches, per_batch / 10, million / 10);
    println!();
    println!("slowest declarative profile: {worst:.0} ns/uplink (target < 1000); JavaScript codec: {js_ns:.0} ns/uplink (target < 2000000: a fresh engine per call, in a worker process)");
}

/// Profiles written by `messnetz profiles import-ttn` from the test fixture in the device
/// repository's layout: the vendor script run as it is, `acme-th1` through decodeUplink and
/// normalizeUplink, `acme-wx2` (ES2015 classes and DataView) through decodeUplink alone.
fn imported_codecs(batches: usize, per_batch: usize, n: usize) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ttn-repo");
    let dir = std::env::temp_dir().join(format!("messnetz-bench-import-{}", std::process::id()));
    let overrides = messnetz::profiles::ttn::mapping::Overrides::default();
    let options = messnetz::profiles::ttn::ImportOptions { source: &source, profiles_dir: &dir, overrides: &overrides };
    let imported = messnetz::profiles::ttn::import(&options).map(|_| ProfileSet::load_dir(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    let set = match imported {
        Ok(Ok(set)) => set,
        other => {
            eprintln!("the fixture's profiles do not import: {other:?}");
            std::process::exit(1);
        }
    };
    for (id, how) in [("acme-th1", "imported, decodeUplink + normalizeUplink"), ("acme-wx2", "imported, ES2015 decodeUplink")] {
        let Some(p) = set.get(id) else {
            eprintln!("{id} was not imported");
            std::process::exit(1);
        };
        let uplinks: Vec<(Option<u8>, &[u8])> = p.example_uplinks().collect();
        let ns = median_ns(p, &uplinks, batches, per_batch);
        let (allocs, growth) = allocations(p, &uplinks, n);
        println!("| {id} ({how}) | javascript | {ns:.0} | {allocs:.2} | {growth} B (over {n} decodes) |");
    }
}
