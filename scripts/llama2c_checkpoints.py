#!/usr/bin/env python3
"""Writes llama2.c checkpoints for speed measurements (Python 3 standard library only).

  random SHAPE OUT_DIR   random weights in the shape of llama2.c's stories15M,
                         stories42M or stories110M (SHAPE = 15M, 42M, 110M): writes
                         OUT_DIR/random{SHAPE}.bin (legacy f32, as run.c reads it)
                         and OUT_DIR/random{SHAPE}-q80.bin (version 2 int8, as
                         runq.c reads it), both standing for the same weights.
  q80 IN OUT             re-exports a legacy f32 checkpoint IN (e.g. stories260K.bin)
                         as version 2 int8 (pure Python: meant for small models).

Shapes (llama2.c README, "models" table): dim 288/512/768, hidden_dim 768/1376/2048,
layers 6/8/12, heads 6/8/12 (kv heads the same), vocab 32000 (the Llama 2 tokenizer,
tokenizer.bin), seq_len 256/1024/1024, shared classifier.

Formats (llama2.c export.py):
  legacy: 7 x i32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
  seq_len; vocab negative if the classifier is separate), then f32 tensors:
  token embedding [vocab, dim], rms_att [layers, dim], wq/wk/wv/wo [layers, dim, dim]
  (wk, wv [layers, kv_dim, dim]), rms_ffn [layers, dim], w1 [layers, hidden, dim],
  w2 [layers, dim, hidden], w3 [layers, hidden, dim], rms_final [dim],
  freq_cis_real and freq_cis_imag [seq_len, head_size / 2].
  version 2: 256-byte header (u32 magic "ak42", i32 version 2, the 7 dims, u8 shared
  classifier, i32 group size, zeros), f32 rms_att [layers, dim], rms_ffn [layers, dim],
  rms_final [dim], then per matrix (embedding, each layer's wq, wk, wv, wo, w1, w2, w3)
  int8 values followed by one f32 scale per group of `group size` consecutive values.
  The group size is the largest power of two <= 64 dividing dim and hidden_dim
  (runq.c quantizes activations of both lengths in such groups).

Random weights: every matrix value is q * s with q uniform in [-127, 127] (SHAKE-256 of
"microlm/<shape>/<tensor>", so the files are the same on every machine) and s = 0.035 / 127
(uniform of standard deviation ~0.02, GPT-2's initialization); norm weights are 1.
The version 2 file stores exactly q and s, so both files stand for the same f32 weights.
"""

import hashlib
import math
import os
import struct
import sys

SHAPES = {
    "15M": dict(dim=288, hidden=768, layers=6, heads=6, vocab=32000, seq_len=256),
    "42M": dict(dim=512, hidden=1376, layers=8, heads=8, vocab=32000, seq_len=1024),
    "110M": dict(dim=768, hidden=2048, layers=12, heads=12, vocab=32000, seq_len=1024),
}
SCALE = struct.unpack("<f", struct.pack("<f", 0.035 / 127))[0]
MAGIC = 0x616B3432


def group_size(dim, hidden):
    gs = 64
    while dim % gs or hidden % gs:
        gs //= 2
    return gs


def random_int8(label, n):
    """n int8 values uniform in [-127, 127], as bytes (two's complement)."""
    raw = hashlib.shake_256(label.encode()).digest(n)
    # Byte 0x80 (-128) is outside the symmetric range runq.c uses: fold it to 0x81 (-127).
    return raw.translate(bytes(0x81 if b == 0x80 else b for b in range(256)))


def int8_to_f32(q, scale):
    """The f32 bytes of q[i] * scale, built byte column by byte column (C speed)."""
    table = [struct.pack("<f", (b - 256 if b > 127 else b) * scale) for b in range(256)]
    out = bytearray(4 * len(q))
    for k in range(4):
        out[k::4] = q.translate(bytes(t[k] for t in table))
    return bytes(out)


def f32s(values):
    return struct.pack(f"<{len(values)}f", *values)


def freq_cis(seq_len, head_size):
    real, imag = [], []
    for t in range(seq_len):
        for i in range(0, head_size, 2):
            angle = t * 10000.0 ** (-i / head_size)
            real.append(math.cos(angle))
            imag.append(math.sin(angle))
    return f32s(real) + f32s(imag)


def matrices(shape, c):
    """(name, rows * cols) of every matrix, in version 2 order (per layer)."""
    dim, hidden, layers = c["dim"], c["hidden"], c["layers"]
    out = [("tok_embeddings", c["vocab"] * dim)]
    for name, n in [("wq", dim * dim), ("wk", dim * dim), ("wv", dim * dim), ("wo", dim * dim),
                    ("w1", hidden * dim), ("w2", dim * hidden), ("w3", hidden * dim)]:
        out += [(f"{name}.{l}", n) for l in range(layers)]
    return out


def write_random(shape, out_dir):
    c = SHAPES[shape]
    dim, hidden, layers, heads, vocab, seq_len = (c[k] for k in ("dim", "hidden", "layers", "heads", "vocab", "seq_len"))
    gs = group_size(dim, hidden)
    dims = struct.pack("<7i", dim, hidden, layers, heads, heads, vocab, seq_len)
    q = {name: random_int8(f"microlm/{shape}/{name}", n) for name, n in matrices(shape, c)}
    ones = f32s([1.0] * dim)
    os.makedirs(out_dir, exist_ok=True)

    legacy = os.path.join(out_dir, f"random{shape}.bin")
    with open(legacy + ".part", "wb") as f:
        f.write(dims)
        f.write(int8_to_f32(q["tok_embeddings"], SCALE))
        f.write(ones * layers)
        for name in ("wq", "wk", "wv", "wo"):
            for l in range(layers):
                f.write(int8_to_f32(q[f"{name}.{l}"], SCALE))
        f.write(ones * layers)
        for name in ("w1", "w2", "w3"):
            for l in range(layers):
                f.write(int8_to_f32(q[f"{name}.{l}"], SCALE))
        f.write(ones)
        f.write(freq_cis(seq_len, dim // heads))
    os.replace(legacy + ".part", legacy)

    v2 = os.path.join(out_dir, f"random{shape}-q80.bin")
    with open(v2 + ".part", "wb") as f:
        header = struct.pack("<Ii", MAGIC, 2) + dims + struct.pack("<Bi", 1, gs)
        f.write(header + bytes(256 - len(header)))
        f.write(ones * (2 * layers + 1))
        for name, n in matrices(shape, c):
            f.write(q[name])
            f.write(f32s([SCALE]) * (n // gs))
    os.replace(v2 + ".part", v2)
    print(f"{legacy}\n{v2} (group size {gs})")


def export_q80(src, dst):
    """Re-exports a legacy checkpoint as version 2 the way export.py quantizes (max-abs / 127)."""
    data = open(src, "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack_from("<7i", data)
    if vocab <= 0:
        sys.exit(f"{src}: a separate classifier (negative vocab_size) is not supported")
    gs = group_size(dim, hidden)
    kv_dim = dim * kv_heads // heads
    at = 28

    def take(n):
        nonlocal at
        v = struct.unpack_from(f"<{n}f", data, at)
        at += 4 * n
        return v

    emb = take(vocab * dim)
    rms_att, wq, wk, wv, wo = take(layers * dim), take(layers * dim * dim), take(layers * kv_dim * dim), take(layers * kv_dim * dim), take(layers * dim * dim)
    rms_ffn, w1, w2, w3 = take(layers * dim), take(layers * hidden * dim), take(layers * dim * hidden), take(layers * hidden * dim)
    rms_final = take(dim)

    def quantize(w):
        q, s = bytearray(len(w)), []
        for g in range(0, len(w), gs):
            group = w[g:g + gs]
            scale = max(abs(x) for x in group) / 127.0
            s.append(scale)
            for i, x in enumerate(group):
                q[g + i] = round(x / scale) & 0xFF if scale else 0
        return bytes(q) + f32s(s)

    with open(dst + ".part", "wb") as f:
        header = struct.pack("<Ii", MAGIC, 2) + struct.pack("<7i", dim, hidden, layers, heads, kv_heads, vocab, seq_len) + struct.pack("<Bi", 1, gs)
        f.write(header + bytes(256 - len(header)))
        f.write(f32s(rms_att) + f32s(rms_ffn) + f32s(rms_final))
        f.write(quantize(emb))
        for w, per in ((wq, dim * dim), (wk, kv_dim * dim), (wv, kv_dim * dim), (wo, dim * dim), (w1, hidden * dim), (w2, dim * hidden), (w3, hidden * dim)):
            for l in range(layers):
                f.write(quantize(w[l * per:(l + 1) * per]))
    os.replace(dst + ".part", dst)
    print(f"{dst} (group size {gs})")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "random" and sys.argv[2] in SHAPES:
        write_random(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "q80":
        export_q80(sys.argv[2], sys.argv[3])
    else:
        usage = "usage: llama2c_checkpoints.py random {15M,42M,110M} OUT_DIR | q80 IN OUT\n\n" + __doc__.split("\n\n")[1]
        if sys.argv[1:] in (["-h"], ["--help"]):
            print(usage)
        else:
            sys.exit(usage)
