#!/usr/bin/env python3
"""Writes tests/data/tokenizer_cases.json: CLIP tokenizer parity cases.

The expected ids come from the reference stack (transformers 5.x
CLIPTokenizer, which is the `tokenizers` pipeline for both folder layouts;
ftfy plays no part in it) on the test tokenizer folders:
  tokenizer    tests/data/tiny-sd/tokenizer       (vocab.json + merges.txt, pad <|endoftext|>)
  tokenizer_2  tests/data/tiny-sdxl/tokenizer_2   (tokenizer.json only, pad "!")
plus the golden prompts and input_ids of the reference packs, read from
--reference (the tests never read it themselves).

  python3 tools/make_tokenizer_cases.py [--reference /work/shared/reference]
  python3 tools/make_tokenizer_cases.py --sweep /tmp/sweep.txt
      every Unicode scalar value in a small template, for the C test
      tokenizer_unicode_sweep (SDC_TOKENIZER_SWEEP=/tmp/sweep.txt build/sdc_tests sweep)
  python3 tools/make_tokenizer_cases.py --compare-v4 /path/to/python
      runs the cases through another interpreter that has transformers 4.x
      (the slow Python CLIPTokenizer), with and without ftfy if installed
      there, and lists where it disagrees with the reference
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
FOLDERS = {"tokenizer": "tiny-sd/tokenizer", "tokenizer_2": "tiny-sdxl/tokenizer_2"}


def hard_cases():
    """(name, prompt) where prompt is a str, or bytes for invalid UTF-8."""
    c = []
    add = lambda name, p: c.append((name, p))
    # accents and composition
    add("accents", "café naïve Ångström crème brûlée")
    add("nfd_cafe", "cafe\u0301 nai\u0308ve A\u030angstro\u0308m")
    add("nfc_vs_nfd_same", "\u00e9t\u00e9 / e\u0301te\u0301")
    add("combining_uncomposable", "x\u0301 q\u0323\u0307 a\u20dd")
    add("combining_alone", "\u0301 \u0301\u0301 !\u0301")
    add("hangul_jamo", "\u1112\u1161\u11ab\u1100\u1173\u11af \ud55c\uae00")
    # emoji
    add("emoji", "a cat 🐱 and a dog 🐶")
    add("emoji_zwj", "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag")
    add("emoji_skin", "👍🏽 👋🏿 thumbs")
    add("emoji_flags_vs16", "🇯🇵 🇺🇸 ❤️ ☀︎")
    add("emoji_run", "🔥🔥🔥🔥🔥🔥🔥🔥")
    # scripts
    add("cjk", "日本語のテキスト 中文提示词")
    add("cjk_mixed", "a photo of 富士山 at sunset, 桜")
    add("korean", "한국어 프롬프트")
    add("arabic", "مرحبا بالعالم")
    add("arabic_diacritics", "مَرْحَبًا")
    add("hebrew", "שלום עולם")
    add("devanagari", "नमस्ते दुनिया")
    add("thai", "สวัสดีชาวโลก")
    add("cyrillic_greek", "Привет МИР, Γειά σου ΚΟΣΜΕ")
    # apostrophes
    add("contractions", "it's don't we're they've I'm you'll he'd")
    add("contractions_upper", "IT'S DON'T WE'RE THEY'VE I'M YOU'LL HE'D")
    add("apostrophe_edge", "'s 's' ''s 'x o'clock rock'n'roll l'amour '")
    add("apostrophe_after_punct", "!'s ?'t .'re")
    add("curly_apostrophe", "it’s Naruto’s ‘quoted’ “double”")
    # numbers
    add("digits", "2024 3.14 1,000 007")
    add("digits_unicode", "٣٤ ½ ² Ⅻ ①")
    add("digits_letters", "8k 4K 1080p 3d")
    # punctuation
    add("punct_runs", "!!! ?!? ... \"))\" ,,, ;-)")
    add("punct_bang", "!! ! a!b wow!")
    add("punct_weights", "(masterpiece:1.2), [[best quality]], {a|b}, ((detailed))")
    add("punct_symbols", "#hashtag @user e-mail a/b a_b ~tilde~ $100 50%")
    add("punct_angle", "<<>> <cat-toy> <lora:foo:0.8>")
    # whitespace
    add("tabs_newlines", "a\tb\nc\r\nd")
    add("multiple_spaces", "  multiple   spaces  here  ")
    add("leading_trailing", "   padded prompt   ")
    add("only_spaces", "     ")
    add("unicode_spaces", "a\u00a0b\u3000c\u2028d\u2009e\u0085f\u1680g\u202fh")
    add("not_spaces", "a\u200bb\u180ec\x1cd\x1fe\ufeffg")
    add("control_chars", "a\x01b\x7fc\x00d".replace("\x00", "") + "\u00adsoft")
    add("replacement_char", "bad \ufffd char")
    add("private_use", "\ue000 \U000f0000 \uffff")
    # case
    add("uppercase", "HELLO WORLD, A PHOTO OF A CAT")
    add("special_casing", "İstanbul ΟΔΟΣ ẞ ǅ ß")
    add("case_singletons", "\u212a\u212b\u2126 K Å Ω")
    add("cherokee", "ᎠᎡᎢ ꭰ")
    add("fullwidth", "ＡＢＣ ｆｕｌｌ １２３")
    # special tokens typed in the prompt
    add("eot_inside", "a photo <|endoftext|> of a cat")
    add("sot_inside", "<|startoftext|>hello<|startoftext|>")
    add("specials_adjacent", "<|endoftext|><|endoftext|>x<|startoftext|>")
    add("specials_upper", "<|ENDOFTEXT|> <|StartOfText|>")
    add("specials_partial", "<|endoftext <|endoftext| |endoftext|> <|>")
    add("specials_spaced", " <|endoftext|> ")
    add("special_then_mark", "<|endoftext|>\u0301a")
    # added tokens are cut out before NFC: ">" + U+0338 would compose to "≯"
    add("special_then_overlay", "a<\u0338b =\u0338 <|endoftext|>\u0338 !\u0338")
    # lengths
    add("empty", "")
    add("single_char", "a")
    add("exactly_75", " ".join(["a"] * 75))
    add("exactly_76", " ".join(["a"] * 76))
    add("overlong", "a photo of an astronaut riding a horse on the moon, " * 8)
    add("overlong_bangs", "wow! " * 60)
    add("overlong_eot", "cat " * 74 + "<|endoftext|> dog dog")
    add("long_word", "a" * 500)
    add("long_word_2", "supercalifragilisticexpialidocious" * 20)
    add("long_cjk_run", "字" * 120)
    add("long_digits", "1234567890" * 12)
    # invalid UTF-8 (bytes; expected ids are those of bytes.decode("utf-8", "replace"))
    add("bad_latin1", b"caf\xe9 au lait")
    add("bad_ff_fe", b"\xff\xfeabc")
    add("bad_surrogate", b"a\xed\xa0\x80b")
    add("bad_truncated_3", b"euro \xe2\x82")
    add("bad_truncated_4", b"smile \xf0\x9f\x98")
    add("bad_overlong", b"a\xc0\xafb\xe0\x80\xafc")
    add("bad_above_max", b"x\xf4\x90\x80\x80y")
    add("bad_stray_cont", b"\x80\x80ok\xbf")
    add("bad_mixed", b"\xe2\x82\xac\xe2\x82 \xf0\x9f\x98\x80\xf0\x9f")
    return c


def decode(p):
    return p.decode("utf-8", "replace") if isinstance(p, bytes) else p


def encode_case(tok, text):
    enc = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True)
    return list(enc.input_ids), int(sum(enc.attention_mask))


def load_tokenizers():
    from transformers import CLIPTokenizer

    return {k: CLIPTokenizer.from_pretrained(os.path.join(DATA, v)) for k, v in FOLDERS.items()}


def goldens(reference):
    from safetensors import safe_open

    out = {}
    for pack in ("tiny-sd", "tiny-sdxl"):
        path = os.path.join(reference, pack, "golden.safetensors")
        with safe_open(path, "np") as f:
            meta = f.metadata()
            entry = {"prompts": json.loads(meta["prompts"])}
            for enc in ("text_encoder", "text_encoder_2"):
                key = enc + "/input_ids"
                if key in f.keys():
                    name = "tokenizer" if enc == "text_encoder" else "tokenizer_2"
                    entry[name] = f.get_tensor(key).astype(int).tolist()
        out[pack] = entry
    return out


AT = lambda content, normalized, special=False, lstrip=False, rstrip=False, single_word=False: {
    "content": content, "lstrip": lstrip, "normalized": normalized, "rstrip": rstrip,
    "single_word": single_word, "special": special}
LEGACY = lambda content: {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                          "rstrip": False, "single_word": False}

# Folders that differ from tiny-sd/tokenizer only in their config files; the
# C test writes the files beside links to the real vocab.json + merges.txt.
CONFIG_FOLDERS = {
    # textual-inversion style added tokens (normalized, lstrip/rstrip,
    # single_word), with a gap in the ids the file gives
    "added_tokens_decoder": {
        "tokenizer_config.json": {
            "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>", "model_max_length": 77, "tokenizer_class": "CLIPTokenizer",
            "added_tokens_decoder": {
                "49406": AT("<|startoftext|>", False, True), "49407": AT("<|endoftext|>", False, True),
                "49408": AT("<Cat-Toy>", True), "49409": AT("XyZ", False, lstrip=True, rstrip=True),
                "49412": AT("sks", True, single_word=True),
            },
        },
    },
    # what SD 1.x repositories ship: legacy AddedToken objects with
    # normalized=true for bos/eos/unk, a plain pad string
    "sd15_style": {
        "tokenizer_config.json": {
            "add_prefix_space": False, "bos_token": LEGACY("<|startoftext|>"), "do_lower_case": True,
            "eos_token": LEGACY("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
            "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer", "unk_token": LEGACY("<|endoftext|>"),
        },
        "special_tokens_map.json": {
            "bos_token": {k: v for k, v in LEGACY("<|startoftext|>").items() if k != "__type"},
            "eos_token": {k: v for k, v in LEGACY("<|endoftext|>").items() if k != "__type"},
            "pad_token": "<|endoftext|>",
            "unk_token": {k: v for k, v in LEGACY("<|endoftext|>").items() if k != "__type"},
        },
    },
    # SD 2.x: pad "!" set in both files
    "sd2_style": {
        "tokenizer_config.json": {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!",
                                  "unk_token": "<|endoftext|>", "model_max_length": 77},
        "special_tokens_map.json": {"pad_token": "!"},
    },
    # an old layout: added_tokens.json and additional special tokens
    "legacy_added_tokens_json": {
        "tokenizer_config.json": {"model_max_length": 77, "pad_token": "<|endoftext|>"},
        "special_tokens_map.json": {"additional_special_tokens": ["<special-a>"]},
        "added_tokens.json": {"<dog-toy>": 49409, "<cat-toy>": 49408},
    },
}

CONFIG_PROMPTS = [
    "a <cat-toy> photo <CAT-TOY> and <Cat-Toy>",
    "a   XyZ   b XyZXyZ xyz",
    "a sks dog, sksx, xsks, sks!",
    "<cat-toy><|endoftext|>XyZ<dog-toy>",
    "<|StartOfText|> <|ENDOFTEXT|> <|endoftext|>",
    "wow!! <special-a> <SPECIAL-A>",
]


def config_folders(tmp):
    from transformers import CLIPTokenizer

    out = {}
    for name, files in CONFIG_FOLDERS.items():
        d = os.path.join(tmp, name)
        os.makedirs(d)
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(os.path.join(DATA, FOLDERS["tokenizer"], f), d)
        for f, content in files.items():
            with open(os.path.join(d, f), "w") as fh:
                json.dump(content, fh)
        tok = CLIPTokenizer.from_pretrained(d)
        cases = []
        for p in CONFIG_PROMPTS:
            ids, n = encode_case(tok, p)
            cases.append({"prompt": p, "ids": ids, "n_real": n})
        out[name] = {"files": files, "cases": cases}
    return out


def make_cases(args):
    import tokenizers
    import transformers

    toks = load_tokenizers()
    out = {
        "_about": "Generated by tools/make_tokenizer_cases.py; do not edit. Expected ids are the reference "
                  "CLIPTokenizer's (padding=max_length, truncation) for each tokenizer folder.",
        "generator": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        "folders": FOLDERS,
    }
    gold = goldens(args.reference)
    # the goldens must agree with this environment, or it is not the reference
    for pack, entry in gold.items():
        for name in ("tokenizer", "tokenizer_2"):
            if name not in entry:
                continue
            for p, want in zip(entry["prompts"], entry[name]):
                got, _ = encode_case(toks[name], p)
                if got != want:
                    sys.exit(f"{pack} {name}: this environment disagrees with the golden for {p!r}")
    out["golden"] = gold
    cases = []
    for name, p in hard_cases():
        case = {"name": name}
        if isinstance(p, bytes):
            case["prompt_hex"] = p.hex()
        else:
            case["prompt"] = p
        for tname, tok in toks.items():
            ids, n = encode_case(tok, decode(p))
            case[tname] = ids
            case[tname + "_n_real"] = n
        cases.append(case)
    out["cases"] = cases
    with tempfile.TemporaryDirectory() as tmp:
        out["config_folders"] = config_folders(tmp)
    path = os.path.join(DATA, "tokenizer_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}: {len(cases)} hard cases x {len(toks)} tokenizers, "
          f"{sum(len(e['prompts']) for e in gold.values())} golden prompts")


def sweep_prompt(cp):
    c = chr(cp)
    # alone, after a letter (composition, letter runs), beside digits and
    # itself (number singletons, punctuation runs), before punctuation
    return c + " a" + c + "1" + c + c + "."


def make_sweep(args):
    tok = load_tokenizers()["tokenizer"]
    cps = [cp for cp in range(1, 0x110000) if not 0xD800 <= cp <= 0xDFFF]
    with open(args.sweep, "w") as f:
        for i in range(0, len(cps), 65536):
            chunk = cps[i:i + 65536]
            encs = tok.backend_tokenizer.encode_batch([sweep_prompt(cp) for cp in chunk])
            for cp, e in zip(chunk, encs):
                f.write("%x %s\n" % (cp, " ".join(map(str, e.ids))))
    print(f"wrote {args.sweep}: {len(cps)} code points, template {sweep_prompt(0x41)!r} with A")


V4_SCRIPT = r"""
import json, sys
import transformers
from transformers import CLIPTokenizer
try:
    import ftfy
    has_ftfy = True
except ImportError:
    has_ftfy = False
folders, prompts = json.load(sys.stdin)
out = {"transformers": transformers.__version__, "ftfy": has_ftfy, "ids": {}}
for name, d in folders.items():
    # the slow tokenizer cannot read a tokenizer.json-only folder (our
    # tokenizer_2): use the same vocabulary from the first folder with its
    # pad token, as a real SDXL tokenizer_2 folder would hold it
    tok = CLIPTokenizer.from_pretrained(folders["tokenizer"], pad_token="!") if name == "tokenizer_2" \
        else CLIPTokenizer.from_pretrained(d)
    out["ids"][name] = [tok(p, padding="max_length", max_length=77, truncation=True).input_ids for p in prompts]
json.dump(out, sys.stdout)
"""


def compare_v4(args):
    toks = load_tokenizers()
    cases = hard_cases()
    prompts = [decode(p) for _, p in cases]
    folders = {k: os.path.join(DATA, v) for k, v in FOLDERS.items()}
    r = subprocess.run([args.compare_v4, "-c", V4_SCRIPT], input=json.dumps([folders, prompts]),
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    v4 = json.loads(r.stdout)
    print(f"transformers {v4['transformers']} slow CLIPTokenizer, ftfy {'installed' if v4['ftfy'] else 'absent'}:")
    ndiff = 0
    for name, tok in toks.items():
        for (cname, _), p, old in zip(cases, prompts, v4["ids"][name]):
            ref, _ = encode_case(tok, p)
            if ref != old:
                ndiff += 1
                print(f"  {name} {cname}: {p[:40]!r}\n    reference {ref[:24]}\n    v4 slow   {old[:24]}")
    print(f"{ndiff} differences")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", default="/work/shared/reference", help="folder of the reference packs")
    ap.add_argument("--sweep", help="write the all-code-points sweep to this file instead")
    ap.add_argument("--compare-v4", help="a python with transformers 4.x: list where its slow tokenizer differs")
    args = ap.parse_args()
    if args.sweep:
        make_sweep(args)
    elif args.compare_v4:
        compare_v4(args)
    else:
        make_cases(args)


if __name__ == "__main__":
    main()
