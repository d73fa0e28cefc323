//! The link (`link/`): frames, the device-side server over NOR-flash slots in
//! RAM, uploads that never lose the served model, and hostile frames. The
//! server runs here on the host exactly as a board runs it; only the port,
//! the flash and the arena are the test's.

use microlm_link::frame::{self, Feed, FrameError, Frames};
use microlm_link::ramflash::RamFlash;
use microlm_link::server::Server;
use microlm_link::{
    file_crc, Done, ErrorKind, GenerateParams, Kv, Request, Response, StopReason, MAX_CHUNK, MAX_FRAME, VERSION,
};
use microlm_tests::link::{Mem, TestPort, TestServer, VecArena, INFO};
use microlm_tests::{converted, reference_cases, ModelFile};

/// Two 1 MiB slots.
fn blank_flash() -> RamFlash<Mem> {
    microlm_tests::link::blank_flash(2 << 20)
}

fn server(flash: RamFlash<Mem>) -> TestServer {
    microlm_tests::link::server(flash)
}

/// A response, owned.
#[derive(Clone, Debug, PartialEq)]
enum R {
    Info { model: Option<(String, u32, u8)>, slot_bytes: u32 },
    Token(u32, Vec<u8>),
    Done(Done),
    Error(ErrorKind, u32),
    Progress(u32, u32),
}

fn owned(r: Response<'_>) -> R {
    match r {
        Response::Info(i) => {
            assert_eq!(i.version, VERSION);
            R::Info { model: i.model.map(|m| (m.name.to_string(), m.crc, m.slot)), slot_bytes: i.slot_bytes }
        }
        Response::Token { id, text } => R::Token(id, text.to_vec()),
        Response::Done(d) => R::Done(d),
        Response::Error { kind, detail } => R::Error(kind, detail),
        Response::UploadProgress { received, len } => R::Progress(received, len),
    }
}

fn frame_of(req: &Request<'_>) -> Vec<u8> {
    let mut buf = [0u8; 2 * MAX_FRAME];
    frame::encode(req, &mut buf).unwrap().to_vec()
}

/// Feeds `bytes` and returns every response the server sent.
fn exchange(s: &mut TestServer, bytes: &[u8]) -> Vec<R> {
    s.port().input.extend(bytes);
    s.poll();
    let out = std::mem::take(&mut s.port().output);
    let mut frames = Frames::<MAX_FRAME>::new();
    let mut replies = Vec::new();
    for b in out {
        if let Feed::Frame(f) = frames.push(b) {
            replies.push(owned(frame::decode::<Response<'_>>(f).expect("the server sent a bad frame")));
        }
    }
    replies
}

fn ask(s: &mut TestServer, req: &Request<'_>) -> Vec<R> {
    exchange(s, &frame_of(req))
}

fn hello(s: &mut TestServer) -> Option<(String, u32, u8)> {
    match ask(s, &Request::Hello { version: VERSION }).as_slice() {
        [R::Info { model, .. }] => model.clone(),
        other => panic!("Hello got {other:?}"),
    }
}

/// Uploads `file` in `chunk`-byte pieces and commits; returns the commit's reply.
fn upload(s: &mut TestServer, file: &[u8], chunk: usize) -> Vec<R> {
    let len = file.len() as u32;
    assert_eq!(ask(s, &Request::UploadBegin { len, crc: file_crc(file) }), [R::Progress(0, len)]);
    for (i, piece) in file.chunks(chunk).enumerate() {
        let offset = (i * chunk) as u32;
        let got = ask(s, &Request::UploadChunk { offset, bytes: piece });
        assert_eq!(got, [R::Progress(offset + piece.len() as u32, len)]);
    }
    ask(s, &Request::UploadCommit)
}

fn params(prompt: &[u8]) -> GenerateParams<'_> {
    GenerateParams {
        prompt,
        steps: 20,
        temperature: 0.0,
        top_p: 0.9,
        top_k: 0,
        min_p: 0.0,
        seed: 1,
        ctx: 0,
        kv: Kv::F32,
    }
}

/// Runs `p`; returns (token ids, text, done).
fn generate(s: &mut TestServer, p: &GenerateParams<'_>) -> (Vec<u32>, Vec<u8>, Done) {
    let replies = ask(s, &Request::Generate(*p));
    let (mut ids, mut text) = (Vec::new(), Vec::new());
    for r in &replies[..replies.len() - 1] {
        match r {
            R::Token(id, t) => {
                ids.push(*id);
                text.extend(t);
            }
            other => panic!("during a generation: {other:?}"),
        }
    }
    match replies.last() {
        Some(R::Done(d)) => (ids, text, *d),
        other => panic!("generation ended with {other:?}"),
    }
}

fn model_bytes(dtype: &str) -> Vec<u8> {
    std::fs::read(converted(dtype)).unwrap()
}

#[test]
fn every_message_survives_a_frame_and_damaged_frames_are_refused() {
    let prompt = b"Once upon a time";
    let chunk = [0u8, 1, 0, 255, 0];
    let reqs = [
        Request::Hello { version: VERSION },
        Request::Generate(params(prompt)),
        Request::Cancel,
        Request::UploadBegin { len: 12345, crc: 0xdead_beef },
        Request::UploadChunk { offset: 7, bytes: &chunk },
        Request::UploadCommit,
        Request::Reset,
    ];
    for req in &reqs {
        let mut f = frame_of(req);
        assert_eq!(f.iter().filter(|&&b| b == 0).count(), 1, "{req:?}: one delimiter");
        assert_eq!(f.pop(), Some(0));
        assert_eq!(frame::decode::<Request<'_>>(&mut f.clone()).unwrap(), *req);
        // Every truncation and every single-bit flip is an error, never a wrong message.
        for cut in 0..f.len() {
            assert!(frame::decode::<Request<'_>>(&mut f[..cut].to_vec()).is_err(), "{req:?} cut at {cut}");
        }
        for bit in 0..f.len() * 8 {
            let mut g = f.clone();
            g[bit / 8] ^= 1 << (bit % 8);
            if g.contains(&0) {
                continue; // a flip to 0x00 splits the frame: the parts are checked as truncations
            }
            assert!(frame::decode::<Request<'_>>(&mut g).is_err(), "{req:?}: bit {bit} flipped");
        }
    }
    // A correct CRC over bytes that are no request: unknown variant, trailing bytes.
    let mut buf = [0u8; 64];
    let mut unknown = frame::encode(&(99u8, 0u8), &mut buf).unwrap().to_vec();
    unknown.pop();
    assert_eq!(frame::decode::<Request<'_>>(&mut unknown), Err(FrameError::Decode));
    let mut trailing = frame::encode(&(6u8, 0u8), &mut buf).unwrap().to_vec();
    trailing.pop();
    assert_eq!(frame::decode::<Request<'_>>(&mut trailing), Err(FrameError::Decode));
}

#[test]
fn uploaded_q8_0_model_reproduces_the_host_on_every_reference_case() {
    let file = model_bytes("q8_0");
    let mut s = server(blank_flash());
    assert_eq!(hello(&mut s), None);
    assert_eq!(ask(&mut s, &Request::Generate(params(b""))), [R::Error(ErrorKind::NoModel, 0)]);
    let committed = upload(&mut s, &file, MAX_CHUNK);
    let crc = file_crc(&file);
    assert!(matches!(&committed[..], [R::Info { model: Some((_, c, 0)), .. }] if *c == crc), "{committed:?}");
    let host = ModelFile::read(&converted("q8_0")).unwrap();
    let model = host.parse(false).unwrap();
    for case in reference_cases() {
        let (want_ids, want_text, _) = microlm_tests::generate(&model, &case);
        let p = GenerateParams {
            prompt: case.prompt.as_bytes(),
            steps: case.steps as u32,
            temperature: case.temperature,
            top_p: case.topp,
            top_k: 0,
            min_p: 0.0,
            seed: case.seed.unwrap_or(1),
            ctx: 0,
            kv: Kv::F32,
        };
        let (ids, text, done) = generate(&mut s, &p);
        assert_eq!(ids, want_ids[1..], "{}: ids", case.name);
        assert_eq!(String::from_utf8_lossy(&text), want_text, "{}: text", case.name);
        assert_eq!(done.prompt_tokens as usize + done.tokens as usize, ids.len() + 1, "{}", case.name);
        assert_eq!(done.arena_bytes as usize, model.plan(model.config().seq_len, microlm::KvDtype::F32).unwrap().total);
    }
}

#[test]
fn uploads_never_lose_the_committed_model() {
    let (first, second) = (model_bytes("q8_0"), model_bytes("q4_0"));
    let mut s = server(blank_flash());
    upload(&mut s, &first, 500);
    let first_model = hello(&mut s).unwrap();
    assert_eq!(first_model.2, 0);
    // A second model goes to slot B and serves.
    upload(&mut s, &second, MAX_CHUNK);
    let second_model = hello(&mut s).unwrap();
    assert_eq!((second_model.1, second_model.2), (file_crc(&second), 1));
    let (ids, _, _) = generate(&mut s, &params(b"Once"));
    assert_eq!(ids.len(), 20);

    // The wrong CRC: refused at commit, the second model still serves.
    let len = first.len() as u32;
    assert_eq!(ask(&mut s, &Request::UploadBegin { len, crc: 1 }), [R::Progress(0, len)]);
    for (i, piece) in first.chunks(MAX_CHUNK).enumerate() {
        ask(&mut s, &Request::UploadChunk { offset: (i * MAX_CHUNK) as u32, bytes: piece });
    }
    assert_eq!(ask(&mut s, &Request::UploadCommit), [R::Error(ErrorKind::UploadCrc, file_crc(&first))]);
    assert_eq!(hello(&mut s), Some(second_model.clone()));
    // Bytes with the right CRC that are no model: refused.
    let junk = vec![0x5a; 4000];
    assert!(matches!(upload(&mut s, &junk, MAX_CHUNK)[..], [R::Error(ErrorKind::UploadModel, _)]));
    assert_eq!(hello(&mut s), Some(second_model.clone()));

    // Cut the link in the middle of an upload at several points, and power-cycle:
    // the board boots serving the last committed model.
    let mut flash = s.into_flash().unwrap();
    for cut in [0, 1, first.len() / 2, first.len() - 1] {
        let mut s = server(flash);
        let len = first.len() as u32;
        ask(&mut s, &Request::UploadBegin { len, crc: file_crc(&first) });
        let mut sent = 0;
        while sent < cut {
            let n = MAX_CHUNK.min(cut - sent);
            ask(&mut s, &Request::UploadChunk { offset: sent as u32, bytes: &first[sent..sent + n] });
            sent += n;
        }
        if cut == first.len() - 1 {
            // Commit before the last byte: refused, nothing changes.
            assert_eq!(ask(&mut s, &Request::UploadCommit), [R::Error(ErrorKind::UploadIncomplete, cut as u32)]);
        }
        flash = s.into_flash().unwrap();
        let mut rebooted = server(flash);
        assert_eq!(hello(&mut rebooted), Some(second_model.clone()), "cut at {cut}");
        flash = rebooted.into_flash().unwrap();
    }
    // A torn commit (the header half written) is no commit either.
    let mut s = server(flash);
    let committed = upload(&mut s, &first, MAX_CHUNK);
    assert!(matches!(&committed[..], [R::Info { model: Some((_, _, 0)), .. }]), "{committed:?}");
    let mut mem = s.into_flash().unwrap().into_inner();
    // Slot A (offset 0) now holds the newest header: erase its CRC word back to 0xFF
    // as if power failed before that word was programmed.
    mem.as_mut()[20..24].fill(0xFF);
    let mut rebooted = server(RamFlash::new(mem));
    assert_eq!(hello(&mut rebooted), Some(second_model));
}

#[test]
fn hostile_upload_requests_get_errors_and_the_device_keeps_serving() {
    let file = model_bytes("q8_0");
    let mut s = server(blank_flash());
    let len = file.len() as u32;
    let chunk =
        |offset: usize, n: usize| Request::UploadChunk { offset: offset as u32, bytes: &file[offset..offset + n] };
    // No upload open.
    assert_eq!(ask(&mut s, &chunk(0, 10)), [R::Error(ErrorKind::UploadState, 0)]);
    assert_eq!(ask(&mut s, &Request::UploadCommit), [R::Error(ErrorKind::UploadState, 0)]);
    // Too large for a slot, or empty.
    let cap = (1 << 20) - 32;
    assert_eq!(ask(&mut s, &Request::UploadBegin { len: cap + 1, crc: 0 }), [R::Error(ErrorKind::UploadTooLarge, cap)]);
    assert_eq!(ask(&mut s, &Request::UploadBegin { len: 0, crc: 0 }), [R::Error(ErrorKind::UploadTooLarge, cap)]);
    ask(&mut s, &Request::UploadBegin { len, crc: file_crc(&file) });
    ask(&mut s, &chunk(0, 100));
    // Replayed, skipped ahead, past the end, empty: each refused with the expected offset.
    assert_eq!(ask(&mut s, &chunk(0, 100)), [R::Error(ErrorKind::UploadOffset, 100)]);
    assert_eq!(ask(&mut s, &chunk(200, 100)), [R::Error(ErrorKind::UploadOffset, 100)]);
    assert_eq!(ask(&mut s, &chunk(100, 0)), [R::Error(ErrorKind::UploadOffset, 100)]);
    let big = Request::UploadChunk { offset: 100, bytes: &file[100..101 + MAX_CHUNK] };
    assert_eq!(ask(&mut s, &big), [R::Error(ErrorKind::UploadOffset, 100)]);
    let over = Request::UploadChunk { offset: 100, bytes: &file[100..100 + MAX_FRAME] };
    assert!(frame_of(&over).len() > MAX_FRAME);
    assert_eq!(ask(&mut s, &over), [R::Error(ErrorKind::Oversized, MAX_FRAME as u32)]);
    // A generation during an upload is refused; the upload goes on to a good commit.
    assert_eq!(ask(&mut s, &Request::Generate(params(b""))), [R::Error(ErrorKind::UploadState, 1)]);
    let mut at = 100;
    while at < file.len() {
        let n = MAX_CHUNK.min(file.len() - at);
        assert_eq!(ask(&mut s, &chunk(at, n)), [R::Progress((at + n) as u32, len)]);
        at += n;
    }
    assert!(matches!(ask(&mut s, &Request::UploadCommit)[..], [R::Info { model: Some(_), .. }]));
    // Wrong protocol version.
    assert_eq!(ask(&mut s, &Request::Hello { version: VERSION + 1 }), [R::Error(ErrorKind::Version, VERSION.into())]);
    assert_eq!(ask(&mut s, &Request::Reset), []);
    assert_eq!(s.port().resets, 1);
}

#[test]
fn bad_generate_settings_get_errors() {
    let mut s = server(blank_flash());
    upload(&mut s, &model_bytes("q8_0"), MAX_CHUNK);
    let bad = |f: &dyn Fn(&mut GenerateParams<'static>)| {
        let mut p = params(b"Hi");
        f(&mut p);
        p
    };
    let cases: Vec<(GenerateParams<'static>, ErrorKind, u32)> = vec![
        (bad(&|p| p.temperature = f32::NAN), ErrorKind::BadSettings, 2),
        (bad(&|p| p.top_p = 0.0), ErrorKind::BadSettings, 3),
        (bad(&|p| p.top_k = 100_000), ErrorKind::BadSettings, 4),
        (bad(&|p| p.min_p = 2.0), ErrorKind::BadSettings, 5),
        (bad(&|p| p.seed = 0), ErrorKind::BadSettings, 6),
        (bad(&|p| p.ctx = 100_000), ErrorKind::BadSettings, 7),
        (bad(&|p| p.prompt = &[b'a'; 600]), ErrorKind::BadSettings, 0),
    ];
    for (p, kind, detail) in cases {
        assert_eq!(ask(&mut s, &Request::Generate(p)), [R::Error(kind, detail)], "{p:?}");
    }
    // A prompt longer than the context.
    let long = b"once upon a time there was a dragon and a cat and a dog ".repeat(10);
    let p = GenerateParams { ctx: 16, ..params(&long[..500]) };
    assert!(matches!(ask(&mut s, &Request::Generate(p))[..], [R::Error(ErrorKind::PromptTooLong, _)]));
    // An arena the device cannot give.
    let mut small = Server::new(s.into_flash(), None, VecArena::new(1000), TestPort::default(), INFO);
    assert!(
        matches!(ask(&mut small, &Request::Generate(params(b"")))[..], [R::Error(ErrorKind::ArenaTooSmall, n)] if n > 1000)
    );
    // Still serving.
    assert!(hello(&mut small).is_some());
}

#[test]
fn cancel_stops_a_generation_after_one_token() {
    let mut s = server(blank_flash());
    upload(&mut s, &model_bytes("q8_0"), MAX_CHUNK);
    let mut bytes = frame_of(&Request::Generate(GenerateParams { steps: 200, ..params(b"") }));
    bytes.extend(frame_of(&Request::Cancel));
    let replies = exchange(&mut s, &bytes);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(matches!(replies[0], R::Token(..)));
    assert!(matches!(replies[1], R::Done(Done { tokens: 1, stop: StopReason::Cancelled, .. })), "{replies:?}");
}

/// A small deterministic generator for the random-bytes suite.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn hostile_byte_streams_never_stop_the_server() {
    let file = model_bytes("q8_0");
    let mut s = server(blank_flash());
    upload(&mut s, &file, MAX_CHUNK);
    let model = hello(&mut s);
    let generate = frame_of(&Request::Generate(GenerateParams { steps: 3, ..params(b"Hi") }));
    // Every truncation of a valid frame, followed by a delimiter.
    for cut in 1..generate.len() - 1 {
        let mut b = generate[..cut].to_vec();
        b.push(0);
        let replies = exchange(&mut s, &b);
        assert!(matches!(replies[..], [R::Error(ErrorKind::Frame | ErrorKind::Decode, _)]), "cut {cut}: {replies:?}");
    }
    // Random bytes (some with delimiters), then a valid Hello still answers.
    let mut state = 0x9e37_79b9_7f4a_7c15;
    for round in 0..200 {
        let n = (xorshift(&mut state) % 2000) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| xorshift(&mut state) as u8).collect();
        let replies = exchange(&mut s, &bytes);
        for r in &replies {
            assert!(matches!(r, R::Error(..) | R::Progress(..) | R::Token(..) | R::Done(..)), "round {round}: {r:?}");
        }
        // A partial frame may be pending: a delimiter ends it.
        exchange(&mut s, &[0]);
        assert_eq!(hello(&mut s), model, "round {round}");
    }
}

#[test]
fn frames_resynchronise_after_an_oversized_one() {
    let mut frames = Frames::<16>::new();
    for _ in 0..40 {
        assert_eq!(frames.push(7), Feed::Pending);
    }
    assert_eq!(frames.push(0), Feed::Oversized);
    for b in [1, 2, 3] {
        frames.push(b);
    }
    assert_eq!(frames.push(0), Feed::Frame(&mut [1, 2, 3]));
}

/// `MAX_FRAME` counts a frame as sent, delimiter included: a frame of exactly
/// `MAX_FRAME` bytes is taken, one byte longer is `Oversized`, and the largest
/// upload chunk's frame fits.
#[test]
fn max_frame_counts_the_delimiter() {
    let mut frames = Frames::<MAX_FRAME>::new();
    for _ in 0..MAX_FRAME - 1 {
        assert_eq!(frames.push(1), Feed::Pending);
    }
    assert!(matches!(frames.push(0), Feed::Frame(f) if f.len() == MAX_FRAME - 1));
    for _ in 0..MAX_FRAME {
        assert_eq!(frames.push(1), Feed::Pending);
    }
    assert_eq!(frames.push(0), Feed::Oversized);
    let chunk = vec![0xA5u8; MAX_CHUNK];
    let largest = frame_of(&Request::UploadChunk { offset: u32::MAX, bytes: &chunk });
    assert!(largest.len() <= MAX_FRAME, "{} bytes", largest.len());
}
