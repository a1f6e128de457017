//! Criterion micro-benchmarks of the pure-code parts of the request path:
//! routing, invocation frame encode/decode, control-message codec, and the
//! Server-Timing header. (Checking out a ready clone is a mutex pop and a
//! pidfd poll: measured end to end by `fnhost-bench`, not here.)

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fnhost_dispatch::response::server_timing;
use fnhost_dispatch::routes::route;
use fnhost_pool::{Invocation, StartKind, Timings};
use fnhost_zygote::clone_request::CloneRequest;
use fnhost_zygote::protocol::{
    decode_frame_rest, encode_frame, frame_len, DaemonMessage, FrameKind, InvokeMeta,
};
use hyper::Method;

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    group.bench_function("native invoke", |b| {
        b.iter(|| {
            route(
                black_box(&Method::POST),
                black_box("/v1/functions/hello/invoke"),
            )
        })
    });
    group.bench_function("lambda invoke by ARN", |b| {
        let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Ahello/invocations";
        b.iter(|| route(black_box(&Method::POST), black_box(path)))
    });
    group.finish();
}

fn frames(c: &mut Criterion) {
    let meta = serde_json::to_vec(&InvokeMeta {
        request_id: "18acb1b8-272e-46b2-8000-000000000000".into(),
        function: "hello".into(),
        memory_mb: 128,
        remaining_ms: 3000,
    })
    .expect("meta serializes");
    let mut group = c.benchmark_group("invoke frame");
    for size in [64usize, 64 << 10, 6 << 20] {
        let body = vec![b'x'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &body, |b, body| {
            b.iter(|| encode_frame(FrameKind::Invoke, black_box(&meta), black_box(body)))
        });
        let frame = encode_frame(FrameKind::Invoke, &meta, &body);
        group.bench_with_input(BenchmarkId::new("decode", size), &frame, |b, frame| {
            b.iter(|| {
                let len =
                    frame_len(frame[..4].try_into().expect("4 bytes"), usize::MAX).expect("length");
                decode_frame_rest(black_box(frame[4..4 + len].to_vec())).expect("frame")
            })
        });
    }
    group.finish();
}

fn control(c: &mut Criterion) {
    let msg = DaemonMessage::Clone {
        request: CloneRequest {
            sandbox: 42,
            writable_bytes: 64 << 20,
            carry: vec!["/usr".into(), "/dev".into()],
        },
    };
    let json = serde_json::to_vec(&msg).expect("serializes");
    c.bench_function("control message encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&msg)))
    });
    c.bench_function("control message decode", |b| {
        b.iter(|| serde_json::from_slice::<DaemonMessage>(black_box(&json)))
    });
}

fn timing_header(c: &mut Criterion) {
    let inv = Invocation {
        body: Vec::new(),
        start: StartKind::OnDemandClone,
        sandbox_id: 7,
        timings: Timings {
            queue_us: 4,
            clone_us: 280,
            setup_us: 600,
            handler_us: 100,
            exchange_us: 600,
            total_us: 1600,
            ..Timings::default()
        },
    };
    c.bench_function("server-timing header", |b| {
        b.iter(|| server_timing(black_box(&inv), 7))
    });
}

criterion_group!(hot_paths, routing, frames, control, timing_header);
criterion_main!(hot_paths);
