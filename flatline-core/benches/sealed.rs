//! The SSv2 multi-recipient path of `PUT /v1/messages/multi_recipient`: parse a 1000-recipient SentMessage (1-3
//! devices each, a 2 KiB shared part) and fan it out (one `0x22 ‖ C ‖ AT ‖ shared` payload per recipient, as the
//! store would receive them). docs/PERFORMANCE.md has the numbers.
//!
//! Run with `cargo bench -p flatline-core --bench sealed`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flatline_core::sealed::multi_recipient::parse;

fn sent_message(recipients: usize, shared: usize) -> Vec<u8> {
    let mut out = vec![0x23];
    let mut n = recipients as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    for i in 0..recipients {
        out.push(0);
        out.extend_from_slice(&(i as u128).to_be_bytes());
        let devices = 1 + i % 3;
        for d in 0..devices {
            out.push(d as u8 + 1);
            let more: u16 = if d + 1 < devices { 0x8000 } else { 0 };
            out.extend_from_slice(&((i as u16 & 0x3fff) | more).to_be_bytes());
        }
        out.extend_from_slice(&[i as u8; 48]);
    }
    out.extend((0..shared).map(|i| i as u8));
    out
}

fn bench(c: &mut Criterion) {
    let message = sent_message(1000, 2048);
    let mut g = c.benchmark_group("ssv2");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("parse_1000_recipients", |b| {
        b.iter(|| black_box(parse(black_box(&message)).map(|m| m.recipients.len())))
    });
    g.bench_function("parse_check_fan_out_1000_recipients", |b| {
        b.iter(|| {
            let m = parse(black_box(&message)).ok()?;
            m.check_recipients().ok()?;
            let payloads: Vec<Vec<u8>> = m.recipients.iter().map(|r| m.payload_for(r)).collect();
            Some(black_box(payloads).len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
