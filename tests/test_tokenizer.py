# SPDX-License-Identifier: Apache-2.0
"""fwassist.Tokenizer (csrc/model/tokenizer.cpp) against Hugging Face `tokenizers`.

Small byte-level BPE tokenizers are trained offline on source files found on this machine
(site-packages .py, /usr/include headers) plus non-ASCII samples; encode and decode must equal
HF's on whole files, random substrings, random code points and random id sequences (which split
UTF-8 sequences, so decode's U+FFFD replacement is compared too).
"""

from __future__ import annotations

import json
import os
import random
import sys
import sysconfig
from pathlib import Path

import pytest

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers  # noqa: E402
from tokenizers import processors, trainers  # noqa: E402

from fwassist import Tokenizer  # noqa: E402

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
                 r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

SAMPLES = [
    "",
    "hello world",
    "def f(x):\r\n\treturn x  \r\n\r\n",
    "    if (a != b) {\n        return -1;   \n    }\n\n\n",
    "中文注释：这是一个测试。 # 注释\n",
    "emoji 😀👍🏽 👨‍👩‍👧 flags 🇫🇷🇯🇵 ✨",
    "combining: e\u0301 A\u030a n\u0303 \u0041\u0308\u0304 q\u0307\u0323 \u1100\u1161\u11a8 한국어",
    "precomposed: é Å ñ Ǟ Ωmega \u212b \u2126 \u0344 \u0958",
    "It's they'RE we'Ve I'M you'll he'D 'S 'ſ 'ſt don't can'T",
    "tabs\tand\u00a0nbsp\u3000ideographic\u2028line\u0085nel\u000b\u000c end",
    "numbers 123 4567 ١٢٣ ½ Ⅻ ²³ 0x1F 3.14e-10",
    "trailing spaces   \n  \n\t\n   ",
    "<|endoftext|>",
    "a<|endoftext|>b<|im_start|>user\nhi<|im_end|><|endoftext|><|endoftext|>",
    "<|endoftext|  <|im_start|>>>",
    "ÿ\x00\x01\x7f control \x1b[31m",
    "Ελληνικά Русский текст עברית العربية हिन्दी ไทย",
    "    " * 50 + "x" + "\n" * 40 + "\r\n" * 10,
    "a" * 500 + " " + "ab" * 300,
]


def _corpus_files() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["stdlib"])]
    files: list[Path] = []
    for root in roots:
        files += sorted(root.glob("*/*.py"))[:400]
    inc = Path("/usr/include")
    if inc.is_dir():
        files += sorted(inc.glob("*.h"))[:150]
    rnd = random.Random(7)
    rnd.shuffle(files)
    return files


def _read(p: Path) -> str | None:
    try:
        data = p.read_bytes()
    except OSError:
        return None
    if not data or len(data) > 200_000:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = [t for t in (_read(p) for p in _corpus_files()) if t]
    assert len(texts) >= 50, "not enough source files for a corpus (site-packages, /usr/include)"
    return texts[:500] + SAMPLES * 20


def _train(tok, texts, vocab_size, **kw):
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, **kw)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def make(kind: str, texts: list[str]):
    if kind == "gpt2":  # what tokenizers.ByteLevelBPETokenizer trains
        bl = tokenizers.ByteLevelBPETokenizer()
        bl.train_from_iterator(texts, vocab_size=2000, special_tokens=SPECIALS, show_progress=False)
        return bl._tokenizer
    tok = tokenizers.Tokenizer(models.BPE(ignore_merges=(kind == "qwen2_ignore_merges")))
    if kind.startswith("qwen2"):
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "split_gpt2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "prefix_space":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    elif kind == "no_regex":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # no_regex makes whole files one word: train on lines so the trainer stays fast.
    train_texts = [ln for t in texts for ln in t.splitlines(True)] if kind == "no_regex" else texts
    _train(tok, train_texts, 1000 if kind == "no_regex" else 2500)
    if kind == "qwen2_added":
        # Non-special added tokens: normalized=True ones are matched after NFC.
        tok.add_tokens([AddedToken("return self", normalized=True),
                        AddedToken("caf\u00e9", normalized=True),
                        AddedToken("#include", normalized=False), AddedToken("<tab>\t")])
    return tok


KINDS = ["gpt2", "qwen2", "qwen2_ignore_merges", "qwen2_added", "split_gpt2", "prefix_space",
         "no_regex"]


@pytest.fixture(scope="module", params=KINDS)
def pair(request, corpus):
    hf = make(request.param, corpus)
    return request.param, hf, Tokenizer.from_json(hf.to_str())


def _check_encode(hf, ft, text):
    want = hf.encode(text).ids
    got = ft.encode(text)
    assert got == want, f"encode mismatch on {text[:200]!r}"
    assert ft.decode(got) == hf.decode(want)
    assert ft.decode(got, skip_special_tokens=False) == hf.decode(want, skip_special_tokens=False)


def _random_text(rnd: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        r = rnd.random()
        if r < 0.4:
            cp = rnd.randrange(0x20, 0x7F)
        elif r < 0.5:
            cp = rnd.choice([9, 10, 13, 32, 32, 0x85, 0xA0, 0x2028, 0x3000, 0x27, 0x17F])
        elif r < 0.6:
            cp = rnd.randrange(0x300, 0x370)
        elif r < 0.8:
            cp = rnd.randrange(0x80, 0x3000)
        else:
            cp = rnd.randrange(0x3000, 0x110000)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0x41
        out.append(chr(cp))
    return "".join(out)


def test_samples(pair):
    _, hf, ft = pair
    assert ft.vocab_size == hf.get_vocab_size(with_added_tokens=True)
    for s in SAMPLES:
        _check_encode(hf, ft, s)


def test_files_and_substrings(pair, corpus):
    _, hf, ft = pair
    rnd = random.Random(1)
    n = 0
    for text in corpus[:250]:
        _check_encode(hf, ft, text)
        for _ in range(4):
            a = rnd.randrange(len(text) + 1)
            b = min(len(text), a + rnd.randrange(200))
            _check_encode(hf, ft, text[a:b])
        n += 1
    assert n >= 50


def test_random_code_points(pair):
    _, hf, ft = pair
    rnd = random.Random(2)
    for _ in range(400):
        _check_encode(hf, ft, _random_text(rnd, rnd.randrange(1, 60)))
    # Every BMP code point once (category/White_Space tables), in chunks.
    cps = [chr(c) for c in range(0x80, 0x10000) if not 0xD800 <= c <= 0xDFFF]
    for k in range(0, len(cps), 2000):
        chunk = cps[k:k + 2000]
        _check_encode(hf, ft, " ".join(chunk))
        _check_encode(hf, ft, "a".join(chunk))
    # Supplementary planes 1-3 and 14, sampled.
    sup = [chr(c) for c in list(range(0x10000, 0x32000, 7)) + list(range(0xE0000, 0xE0200))]
    for k in range(0, len(sup), 2000):
        _check_encode(hf, ft, " ".join(sup[k:k + 2000]))


def test_decode_random_ids(pair):
    _, hf, ft = pair
    rnd = random.Random(3)
    v = ft.vocab_size
    for _ in range(2000):
        ids = [rnd.randrange(v) for _ in range(rnd.randrange(0, 12))]
        assert ft.decode(ids) == hf.decode(ids), ids
        assert ft.decode(ids, skip_special_tokens=False) == hf.decode(ids, skip_special_tokens=False)
    with pytest.raises(ValueError):
        ft.decode([v])
    with pytest.raises(ValueError):
        ft.decode([-1])


def test_special_tokens_and_empty(pair):
    _, hf, ft = pair
    assert ft.encode("") == []
    assert ft.decode([]) == ""
    eot = hf.token_to_id("<|endoftext|>")
    assert ft.encode("<|endoftext|>") == [eot]
    assert ft.encode("x<|endoftext|><|endoftext|>y")[1:3] == [eot, eot]
    assert ft.decode([eot]) == ""
    assert ft.decode([eot], skip_special_tokens=False) == "<|endoftext|>"


# ---------------------------------------------------------------------------------------------
# Refusals

@pytest.fixture(scope="module")
def qwen2_json(corpus) -> dict:
    return json.loads(make("qwen2", corpus[:60]).to_str())


def _refused(cfg: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Tokenizer.from_json(json.dumps(cfg))


@pytest.mark.parametrize("mutate, fragment", [
    (lambda c: c["model"].update(type="WordPiece"), "model type WordPiece"),
    (lambda c: c["model"].update(dropout=0.1), "BPE dropout"),
    (lambda c: c["model"].update(unk_token="<unk>"), "BPE unk_token"),
    (lambda c: c["model"].update(byte_fallback=True), "BPE byte_fallback"),
    (lambda c: c["model"].update(continuing_subword_prefix="##"), "continuing_subword_prefix"),
    (lambda c: c.update(normalizer={"type": "NFKC"}), "normalizer NFKC"),
    (lambda c: c.update(normalizer={"type": "Sequence", "normalizers": []}), "normalizer Sequence"),
    (lambda c: c.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer Whitespace"),
    (lambda c: c.update(pre_tokenizer=None), "pre_tokenizer null"),
    (lambda c: c["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=r"\w+"),
     r"Split regex \\w\+"),
    (lambda c: c["pre_tokenizer"]["pretokenizers"][0].update(behavior="Removed"),
     "Split behavior"),
    (lambda c: c["pre_tokenizer"]["pretokenizers"][0].update(invert=True), "invert"),
    (lambda c: c["pre_tokenizer"]["pretokenizers"][1].update(use_regex=True), "use_regex"),
    (lambda c: c.update(decoder={"type": "WordPiece"}), "decoder WordPiece"),
    (lambda c: c.update(decoder=None), "decoder null"),
    (lambda c: c.update(post_processor={"type": "TemplateProcessing"}),
     "post_processor TemplateProcessing"),
    (lambda c: c["added_tokens"][0].update(lstrip=True), "added token lstrip"),
    (lambda c: c["added_tokens"][0].update(single_word=True), "added token single_word"),
    (lambda c: c.update(truncation={"max_length": 8}), "truncation"),
])
def test_refusals(qwen2_json, mutate, fragment):
    cfg = json.loads(json.dumps(qwen2_json))
    mutate(cfg)
    _refused(cfg, "unsupported tokenizer.json feature: .*" + fragment)


def test_malformed(qwen2_json):
    for bad in ["", "{", "[]", '{"model": 1}', json.dumps(qwen2_json)[:-1]]:
        with pytest.raises(ValueError, match="malformed tokenizer.json|invalid JSON|trailing data"):
            Tokenizer.from_json(bad)
    cfg = json.loads(json.dumps(qwen2_json))
    cfg["model"]["merges"].append("nosuch token")
    with pytest.raises(ValueError, match="missing from the vocab"):
        Tokenizer.from_json(json.dumps(cfg))


def test_canonical_json_and_pair_merges(qwen2_json, corpus):
    # The artifact manifest holds the object in canonical form (sorted keys, no whitespace);
    # newer HF versions write merges as [a, b] pairs.
    hf = tokenizers.Tokenizer.from_str(json.dumps(qwen2_json))
    canon = json.dumps(qwen2_json, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    cfg = json.loads(canon)
    cfg["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m
                              for m in cfg["model"]["merges"]]
    for text in (canon, json.dumps(cfg)):
        ft = Tokenizer.from_json(text)
        for s in SAMPLES + corpus[:20]:
            assert ft.encode(s) == hf.encode(s).ids


def test_encode_rejects_surrogates(qwen2_json):
    ft = Tokenizer.from_json(json.dumps(qwen2_json))
    with pytest.raises((ValueError, UnicodeError)):
        ft.encode("a\ud800b")


# Code points whose UTF-8 encodings hold every byte that UTF-8 uses: U+0000-U+07FF (ASCII, the
# lead bytes C2-DF, every continuation byte 80-BF), one per three-byte lead E0-EF and one per
# four-byte lead F0-F4.
BYTE_COVER = (list(range(0x800)) + [0x800] + [lead << 12 for lead in range(1, 16)]
              + [0x10000] + [lead << 18 for lead in range(1, 5)])
NEVER_IN_UTF8 = {0xC0, 0xC1} | set(range(0xF5, 0x100))


def test_synthetic_byte_alphabet_is_hf_bytelevel():
    """fwassist.export.synthetic.bytes_to_unicode (the synthetic models' byte-level vocabulary)
    is HF's ByteLevel byte-to-character map: the same 256 characters, and every byte that
    occurs in UTF-8 written with the character HF's ByteLevel pre-tokenizer writes for it and
    read back by HF's ByteLevel decoder. The 13 bytes that never occur in UTF-8 cannot reach
    HF's pre-tokenizer (it takes text); its decoder turns each one's character into an invalid
    byte (U+FFFD), and the remaining 13 characters are the same on both sides."""
    from fwassist.export.synthetic import bytes_to_unicode

    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    dec = decoders.ByteLevel()
    seen: set[int] = set()
    for cp in BYTE_COVER:
        text = chr(cp)
        data = text.encode("utf-8")
        ours = "".join(table[b] for b in data)
        assert pre.pre_tokenize_str(text) == [(ours, (0, 1))], hex(cp)
        assert dec.decode(list(ours)) == text, hex(cp)
        seen.update(data)
    assert seen == set(range(256)) - NEVER_IN_UTF8
    for b in NEVER_IN_UTF8:
        assert dec.decode([table[b]]) == "\ufffd", hex(b)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
