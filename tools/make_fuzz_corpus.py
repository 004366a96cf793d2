#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets in fuzz/ (fuzz/corpus/<target>/).

A few tiny valid (and a few deliberately broken) inputs per target: copied
from tests/data where a small file exists, otherwise made here. Run from the
repository root; it rewrites fuzz/corpus from scratch. Needs Python with
torch and safetensors (development only: the corpus is committed, `make fuzz`
never runs this).

fuzz/single_file takes a list of tensors ("<name> <d0> <d1> ...", one per
line) made from tests/data/single/*.recipe.json. Multi-file inputs are joined with "\n@@\n" (fuzz/fuzz_util.h: fuzz_split).
"""
import io
import json
import os
import shutil
import struct
import zipfile

import torch
from safetensors.torch import save as _st_save


def st_save(tensors, metadata=None):
    """safetensors bytes; each tensor its own copy (shared storage is refused)."""
    return _st_save({k: v.clone() for k, v in tensors.items()}, metadata=metadata)

OUT = "fuzz/corpus"
SEP = b"\n@@\n"
D = "tests/data"


def put(target, name, data):
    os.makedirs(f"{OUT}/{target}", exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(f"{OUT}/{target}/{name}", "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def copy(target, path, name=None):
    put(target, name or os.path.basename(path), read(path))


def torch_save(obj, proto=2):
    b = io.BytesIO()
    torch.save(obj, b, pickle_protocol=proto)
    return b.getvalue()


# ---- safetensors ----------------------------------------------------------------
def safetensors_seeds():
    t = "safetensors"
    put(t, "mixed", st_save({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
                             "b": torch.ones(2, dtype=torch.float16),
                             "c": torch.zeros(3, dtype=torch.bfloat16),
                             "d": torch.tensor([1, -2], dtype=torch.int64),
                             "e": torch.zeros(0, 4)}, metadata={"format": "pt", "note": "x"}))
    put(t, "fp8", st_save({"w": torch.zeros(4, dtype=torch.float8_e4m3fn),
                           "v": torch.zeros(2, dtype=torch.float8_e5m2)}))
    put(t, "scalar", st_save({"s": torch.tensor(3.0)}))
    put(t, "empty", st_save({}))
    put(t, "bad_overlap", b'>\x00\x00\x00\x00\x00\x00\x00{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                          b'"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}' + b"\0" * 8)
    for f in ["ckpt/params_expected.safetensors", "ckpt/lightning_expected.safetensors", "lora/err_rank.safetensors"]:
        copy(t, f"{D}/{f}")


# ---- JSON configs and model folders ------------------------------------------------
MODELS = ["tiny-sd", "tiny-sd2", "tiny-sd2v", "tiny-sdxl"]


def json_seeds():
    t = "json_config"
    for m in MODELS:
        for comp, cfg in [("unet", "config.json"), ("vae", "config.json"), ("text_encoder", "config.json"),
                          ("text_encoder_2", "config.json"), ("scheduler", "scheduler_config.json")]:
            p = f"{D}/{m}/{comp}/{cfg}"
            if os.path.exists(p):
                put(t, f"{m}-{comp}", json.dumps(json.load(open(p)), separators=(",", ":")))
    put(t, "python_floats", '{"lambda_min_clipped": -Infinity, "x": NaN, "y": [Infinity, 1e999], "s": "Infinity"}')
    put(t, "nested", "[" * 40 + "]" * 40)


def model_index_seeds():
    t = "model_index"
    for m in MODELS:
        parts = [read(f"{D}/{m}/model_index.json")]
        for comp, cfg in [("unet", "config.json"), ("text_encoder", "config.json"), ("vae", "config.json"),
                          ("scheduler", "scheduler_config.json")]:
            parts.append(json.dumps(json.load(open(f"{D}/{m}/{comp}/{cfg}")), separators=(",", ":")).encode())
        put(t, m, SEP.join(parts))
    put(t, "index_only", read(f"{D}/tiny-sd/model_index.json"))


# ---- pickles and checkpoints ---------------------------------------------------------
def pickle_seeds():
    for f in sorted(os.listdir(f"{D}/ckpt")):
        if f.endswith((".pt", ".ckpt")):
            copy("ckpt", f"{D}/ckpt/{f}")
            try:
                z = zipfile.ZipFile(f"{D}/ckpt/{f}")
            except zipfile.BadZipFile:
                continue
            for n in z.namelist():
                if n.endswith("/data.pkl"):
                    put("pickle", f.rsplit(".", 1)[0], z.read(n))
    sd = {"w": torch.arange(4.0).reshape(2, 2), "v": torch.arange(6, dtype=torch.int16)[::2],
          "p": torch.nn.Parameter(torch.ones(3, dtype=torch.float16))}
    for proto in (2, 4):
        b = torch_save(sd, proto)
        put("ckpt", f"proto{proto}.pt", b)
        z = zipfile.ZipFile(io.BytesIO(b))
        put("pickle", f"proto{proto}", z.read([n for n in z.namelist() if n.endswith("data.pkl")][0]))
    # refused globals, in both GLOBAL and STACK_GLOBAL form
    put("pickle", "evil_global", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.")
    put("pickle", "evil_stack_global", b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.")


# ---- tokenizers ------------------------------------------------------------------------
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def mini_tokenizer():
    """A CLIP-layout BPE vocabulary small enough for a seed: byte symbols,
    their </w> forms, a few merges, and the special tokens."""
    base = bytes_to_unicode()
    vocab = {}
    for s in base + [c + "</w>" for c in base]:
        vocab.setdefault(s, len(vocab))
    merges = [("c", "a"), ("ca", "t</w>"), ("o", "f</w>"), ("p", "h"), ("ph", "o"), ("t", "o</w>"),
              ("pho", "to</w>"), ("a", "n"), ("an", "d</w>"), ("Ã", "©</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for s in ["<|startoftext|>", "<|endoftext|>"]:
        vocab[s] = len(vocab)
    return vocab, merges


def tokenizer_seeds():
    t = "clip_tokenize"
    cases = json.load(open(f"{D}/tokenizer_cases.json"))["cases"]
    for i, c in enumerate(cases[::4]):
        text = bytes.fromhex(c["prompt_hex"]) if "prompt_hex" in c else c["prompt"].encode("utf-8", "surrogatepass")
        put(t, f"case{i:02d}", bytes([i & 1]) + text)
    put(t, "invalid_utf8", b"\x00caf\xc3 \xff\xfe\xed\xa0\x80 \xf4\x90\x80\x80 cat")
    put(t, "specials", b"\x01<|startoftext|>a<|ENDOFTEXT|>!!  b\t\n<|endoftext|>")

    t = "tokenizer_files"
    vocab, merges = mini_tokenizer()
    vj = json.dumps(vocab, ensure_ascii=False).encode()
    mt = ("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n").encode()
    tc = json.dumps({"model_max_length": 16, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                     "unk_token": "<|endoftext|>", "pad_token": "!",
                     "added_tokens_decoder": {
                         str(vocab["<|startoftext|>"]): {"content": "<|startoftext|>", "special": True,
                                                         "normalized": False},
                         "600": {"content": "sks", "special": False, "normalized": True, "lstrip": True,
                                 "single_word": True}}}).encode()
    sm = json.dumps({"bos_token": {"content": "<|startoftext|>", "normalized": True}, "pad_token": "<|endoftext|>",
                     "additional_special_tokens": ["<x>"]}).encode()
    at = json.dumps({"<new>": 700}).encode()
    put(t, "vocab_merges", b"\x01" + SEP.join([vj, mt]))
    put(t, "vocab_merges_configs", b"\x01" + SEP.join([vj, mt, tc, sm, at]))
    put(t, "vocab_merges_old_config", b"\x01" + SEP.join([vj, mt, json.dumps({"model_max_length": 1e30}).encode(), sm, at]))
    tj = {"version": "1.0", "added_tokens": [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "special": True,
                                              "normalized": False, "lstrip": False, "rstrip": False,
                                              "single_word": False}],
          "model": {"type": "BPE", "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges[:5]] +
                    [[a, b] for a, b in merges[5:]]}}
    put(t, "tokenizer_json", b"\x00" + json.dumps(tj, ensure_ascii=False).encode())
    put(t, "tokenizer_json_config", b"\x00" + SEP.join([json.dumps(tj, ensure_ascii=False).encode(), tc, sm]))


# ---- images -----------------------------------------------------------------------------
def image_seeds():
    for f in ["gray.png", "gray16.png", "palette.png", "palette_trns.png", "rgb.png", "rgba.png", "small.png",
              "huge.png"]:
        copy("image_png", f"{D}/images/{f}")
    for f in ["cmyk.jpg", "exif6.jpg", "gray.jpg", "progressive.jpg", "q75_420.jpg", "q80_422.jpg", "q90_444.jpg",
              "truncated.jpg"]:
        copy("image_jpeg", f"{D}/images/{f}")
    for f in ["lossless.webp", "lossless_alpha.webp", "lossy.webp", "lossy_alpha.webp", "truncated.webp"]:
        copy("image_webp", f"{D}/images/{f}")


# ---- LoRA (names of fuzz/lora.c's model) ---------------------------------------------------
def lora_seeds():
    t = "lora"
    h = torch.float16
    r = 2

    def pair(down_shape, up_shape):
        return torch.ones(down_shape, dtype=h) * 0.5, torch.ones(up_shape, dtype=h) * 0.25

    d, u = pair((r, 4), (4, r))
    cd, cu = pair((r, 4, 3, 3), (4, r, 1, 1))
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    put(t, "diffusers", st_save({f"unet.{q}.lora.down.weight": d, f"unet.{q}.lora.up.weight": u,
                                 f"unet.{q}.alpha": torch.tensor(1.0, dtype=h),
                                 "unet.conv_in.lora.down.weight": cd, "unet.conv_in.lora.up.weight": cu,
                                 "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight":
                                     torch.ones(r, 8, dtype=h),
                                 "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight":
                                     torch.ones(8, r, dtype=h)}))
    meta = {"lora_adapter_metadata": json.dumps({"unet.r": r, "unet.lora_alpha": 4,
                                                 "unet.alpha_pattern": {"attn1.to_q": 8, "conv_.*": 2},
                                                 "unet.use_rslora": False})}
    put(t, "peft", st_save({f"unet.{q}.lora_A.weight": d, f"unet.{q}.lora_B.weight": u,
                            "unet.conv_in.lora_A.weight": cd, "unet.conv_in.lora_B.weight": cu}, metadata=meta))
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    sgm = "lora_unet_input_blocks_1_1_proj_in"
    put(t, "kohya", st_save({f"{k}.lora_down.weight": d, f"{k}.lora_up.weight": u, f"{k}.alpha": torch.tensor(1.0),
                             f"{sgm}.lora_down.weight": d, f"{sgm}.lora_up.weight": u,
                             "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(r, 8, dtype=h),
                             "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.ones(16, r, dtype=h),
                             "lora_unet_nothing_here.lora_down.weight": d, "lora_unet_nothing_here.lora_up.weight": u}))
    m = "lora_unet_mid_block_resnets_0_conv1"
    put(t, "tucker", st_save({f"{m}.lora_down.weight": torch.ones(r, 4, 1, 1, dtype=h),
                              f"{m}.lora_mid.weight": torch.ones(r, r, 3, 3, dtype=h),
                              f"{m}.lora_up.weight": torch.ones(4, r, 1, 1, dtype=h)}))
    put(t, "old_processor", st_save({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight": d,
                                     "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight": u}))
    raw = st_save({f"base_model.model.{q}.lora_A.weight": d, f"base_model.model.{q}.lora_B.weight": u})
    put(t, "peft_raw", raw + SEP + json.dumps({"r": r, "lora_alpha": 4, "alpha_pattern": {"to_q": 2},
                                               "use_rslora": True}).encode())
    b = io.BytesIO()
    torch.save({f"unet.{q}.lora.down.weight": d.float(), f"unet.{q}.lora.up.weight": u.float()}, b)
    put(t, "torch_zip", b.getvalue())
    for f in ["err_missing_up.safetensors", "err_shape.safetensors", "err_dora.safetensors", "sdxl.safetensors"]:
        copy(t, f"{D}/lora/{f}")


# ---- single-file checkpoints (fuzz/single_file.c: "<name> <dims...>" lines) ----------------------
def single_file_seeds():
    import glob
    for r in sorted(glob.glob(f"{D}/single/*.recipe.json")):
        tensors = json.load(open(r))["tensors"]
        lines = [" ".join([t["name"]] + [str(d) for d in t["shape"]]) for t in tensors]
        name = os.path.basename(r).split(".")[0]
        put("single_file", name, "\n".join(lines) + "\n")
        # the UNet alone, and the text encoder alone
        put("single_file", name + "-unet", "\n".join(l for l in lines if "diffusion_model" in l) + "\n")


# ---- datasets ----------------------------------------------------------------------------------
def dataset_seeds():
    t = "metadata_jsonl"
    put(t, "imagefolder", b"\x00" + read(f"{D}/datasets/imagefolder/metadata.jsonl").replace(b"a.jpg", b"b.jpg")
        .replace(b"b.png", b"a.png"))
    put(t, "alt_column", b"\x01" + b'{"file_name": "a.png", "alt": "x"}\r\n\n{"file_name": "b.jpg", "alt": ["y", "z"]}\n')
    put(t, "kohya_caption", b"\x00\xef\xbb\xbf  a photo of sks dog, 1girl  \nsecond line ignored\n")
    put(t, "bad_json", b"\x00" + read(f"{D}/datasets/bad_json/metadata.jsonl"))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for f in [safetensors_seeds, json_seeds, model_index_seeds, pickle_seeds, tokenizer_seeds, image_seeds,
              lora_seeds, single_file_seeds, dataset_seeds]:
        f()
    total = 0
    for root, _, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"{OUT}: {total} bytes")


if __name__ == "__main__":
    main()
