#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz corpora (fuzz/corpus/<target>/seed-*).

Real files where a reference writer exists (PyPI `safetensors` and `gguf`, with
numpy), hand-built ones for the hostile shapes. Run once; the files are checked
in, so the harness and the replay test do not need Python:

    python3 -m venv /tmp/v && /tmp/v/bin/pip install safetensors gguf numpy
    /tmp/v/bin/python fuzz/make_seeds.py
"""

import base64
import hashlib
import json
import os
import struct
import sys
import tempfile

import numpy as np
from safetensors.numpy import save
import gguf

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def st_raw(header, data=b""):
    h = header if isinstance(header, bytes) else header.encode()
    return struct.pack("<Q", len(h)) + h + data


# --- safetensors ------------------------------------------------------------
put("safetensors", "f32-i64.safetensors", save(
    {"a": np.zeros((2, 2), np.float32), "b": np.arange(3, dtype=np.int64)},
    metadata={"format": "pt"}))
put("safetensors", "mixed-dtypes.safetensors", save({
    "h": np.ones((3,), np.float16), "u": np.ones((1, 2, 1), np.uint8),
    "b": np.array([True, False]), "d": np.zeros((1,), np.float64),
    "e": np.zeros((0, 4), np.float32)}))
put("safetensors", "empty.safetensors", save({}))
put("safetensors", "padded.safetensors", st_raw(
    '{"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}    ', b"\0" * 4))
put("safetensors", "f4-half-bytes.safetensors", st_raw(
    '{"x":{"dtype":"F4","shape":[2,2],"data_offsets":[0,2]}}', b"\0" * 2))
put("safetensors", "f4-odd-count.safetensors", st_raw(
    '{"x":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', b"\0" * 2))
put("safetensors", "overlap.safetensors", st_raw(
    '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
    '"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}', b"\0" * 6))
put("safetensors", "duplicate.safetensors", st_raw(
    '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
    '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', b"\0" * 2))
put("safetensors", "shape-overflow.safetensors", st_raw(
    '{"a":{"dtype":"F64","shape":[4294967296,4294967296,2],"data_offsets":[0,8]}}', b"\0" * 8))
put("safetensors", "huge-offsets.safetensors", st_raw(
    '{"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,0]}}'))
put("safetensors", "header-len-max.safetensors", struct.pack("<Q", 2**64 - 1) + b"{}")
put("safetensors", "header-len-past-end.safetensors", struct.pack("<Q", 99_999_999) + b"{}")
put("safetensors", "deep-nesting.safetensors", st_raw(
    '{"__metadata__":' + "[" * 200 + "]" * 200 + "}"))
put("safetensors", "metadata-nonstring.safetensors", st_raw('{"__metadata__":{"a":1}}'))
put("safetensors", "float-dims.safetensors", st_raw(
    '{"a":{"dtype":"U8","shape":[1.5e300],"data_offsets":[0,1]}}', b"\0"))

# --- GGUF -------------------------------------------------------------------
def gguf_file(build, arch="llama"):
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.gguf")
        w = gguf.GGUFWriter(p, arch)
        build(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return open(p, "rb").read()


def small(w):
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_token_list(["<s>", "</s>", "a", "b"])
    w.add_token_scores([0.0, 0.0, -1.0, -2.0])
    w.add_bool("x.flag", True)
    w.add_tensor("tok_embd.weight", np.zeros((4, 8), np.float32))
    w.add_tensor("out.weight", np.zeros((8,), np.float16))


def aligned(w):
    w.add_custom_alignment(64)
    w.add_uint64("x.u64", 7)
    w.add_int8("x.i8", -1)
    w.add_float64("x.f64", 1.5)
    w.add_array("x.ints", [1, 2, 3])
    w.add_tensor("w", np.zeros((32,), np.float32))


put("gguf", "small.gguf", gguf_file(small))
put("gguf", "aligned64.gguf", gguf_file(aligned))


def s(v):
    b = v.encode() if isinstance(v, str) else v
    return struct.pack("<Q", len(b)) + b


def gguf_raw(n_tensors, kvs, tensors=(), version=3):
    out = b"GGUF" + struct.pack("<IQQ", version, n_tensors, len(kvs))
    for k in kvs:
        out += k
    for t in tensors:
        out += t
    return out


put("gguf", "tensor-count-huge.gguf", b"GGUF" + struct.pack("<IQQ", 3, 2**63, 0))
put("gguf", "kv-count-huge.gguf", b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40))
put("gguf", "string-len-huge.gguf", gguf_raw(0, [struct.pack("<Q", 2**63)]))
put("gguf", "array-len-huge.gguf", gguf_raw(
    0, [s("a") + struct.pack("<IIQ", 9, 4, 2**62)]))
put("gguf", "nested-array.gguf", gguf_raw(
    0, [s("a") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 4, 1) + b"\0" * 4]))
put("gguf", "array-of-strings.gguf", gguf_raw(
    0, [s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3) + s("a") + s("") + s("ccc")]))
put("gguf", "dims-overflow.gguf", gguf_raw(
    1, [], [s("w") + struct.pack("<I", 4) + struct.pack("<QQQQ", 2**32, 2**32, 2**32, 2**32)
            + struct.pack("<IQ", 0, 0)]))
put("gguf", "bad-alignment.gguf", gguf_raw(
    0, [s("general.alignment") + struct.pack("<II", 4, 3)]))
put("gguf", "offset-overflow.gguf", gguf_raw(
    1, [], [s("w") + struct.pack("<IQ", 1, 32) + struct.pack("<IQ", 0, 2**64 - 32)]))
put("gguf", "quantized-q4k.gguf", gguf_raw(
    1, [s("general.architecture") + struct.pack("<I", 8) + s("llama")],
    [s("w") + struct.pack("<IQQ", 2, 256, 2) + struct.pack("<IQ", 12, 0)]) + b"\0" * 600)
put("gguf", "version2.gguf", gguf_raw(0, [], [], version=2))

# --- NDJSON commits (as huggingface_hub's create_commit sends them) ----------
def line(key, value):
    return json.dumps({"key": key, "value": value}) + "\n"


hdr = line("header", {"summary": "Upload folder", "description": ""})
put("ndjson", "upload-folder.ndjson", hdr
    + line("file", {"content": base64.b64encode(b"# card\n").decode(), "path": "README.md",
                    "encoding": "base64"})
    + line("lfsFile", {"path": "model.safetensors", "algo": "sha256",
                       "oid": hashlib.sha256(b"x").hexdigest(), "size": 1})
    + line("deletedFile", {"path": "old.bin"})
    + line("deletedFolder", {"path": "logs/"}))
put("ndjson", "parent-commit.ndjson", line(
    "header", {"summary": "s", "description": "d", "parentCommit": "a" * 40}))
put("ndjson", "copy.ndjson", hdr + line("lfsFile", {
    "path": "b.bin", "algo": "sha256", "oid": "ab" * 32, "oldPath": "a.bin"}))
put("ndjson", "crlf.ndjson", hdr.replace("\n", "\r\n") + "\r\n\r\n")
put("ndjson", "no-header.ndjson", line("deletedFile", {"path": "x"}))
put("ndjson", "two-headers.ndjson", hdr + hdr)
put("ndjson", "bad-paths.ndjson", hdr + line("deletedFile", {"path": "../etc/passwd"})
    + line("file", {"content": "", "path": ".git/config"}))
put("ndjson", "bad-base64.ndjson", hdr + line("file", {"content": "!!!", "path": "a"}))
put("ndjson", "unknown-key.ndjson", hdr + line("copyFile", {"path": "a"}))
put("ndjson", "deep.ndjson", '{"key":"header","value":' + "[" * 300 + "]" * 300 + "}\n")
put("ndjson", "no-newline.ndjson", hdr.rstrip("\n"))

# --- LFS batch bodies ---------------------------------------------------------
oid = hashlib.sha256(b"weights").hexdigest()
put("lfs_batch", "upload.json", json.dumps({
    "operation": "upload", "transfers": ["basic", "multipart"], "hash_algo": "sha256",
    "objects": [{"oid": oid, "size": 123456789}]}))
put("lfs_batch", "download.json", json.dumps({
    "operation": "download", "transfers": ["basic"], "ref": {"name": "refs/heads/main"},
    "objects": [{"oid": oid.upper(), "size": 7}, {"oid": "ab" * 32, "size": 0}]}))
put("lfs_batch", "negative-size.json", json.dumps({
    "operation": "upload", "objects": [{"oid": oid, "size": -1}]}))
put("lfs_batch", "huge-size.json", '{"operation":"upload","objects":[{"oid":"%s","size":9223372036854775807}]}' % oid)
put("lfs_batch", "float-size.json", '{"operation":"upload","objects":[{"oid":"%s","size":1e300}]}' % oid)
put("lfs_batch", "bad-oid.json", json.dumps({"operation": "upload", "objects": [{"oid": "é" * 64, "size": 1}]}))
put("lfs_batch", "whitespace.json", "  \n")
put("lfs_batch", "array.json", "[\"upload\", null, []]")

# --- .gitattributes -------------------------------------------------------------
DEFAULT = open(os.path.join(os.path.dirname(ROOT), "..", "hub-api", "src", "git",
                            "attributes.rs")).read()
DEFAULT = DEFAULT.split('DEFAULT_GITATTRIBUTES: &str = "\\\n', 1)[1].split('";', 1)[0]
put("gitattributes", "hf-default", DEFAULT + "\0model.safetensors\0a/b/c.bin\0README.md")
put("gitattributes", "explicit-paths",
    "*.bin filter=lfs diff=lfs merge=lfs -text\n/big[[:space:]]file.dat filter=lfs\n"
    "saved_model/**/* filter=lfs\nsmall.bin -filter\n!x.bin filter=lfs\n"
    "\0big file.dat\0saved_model/v/x\0small.bin\0a/b[1]*.raw")
put("gitattributes", "classes", "[!a-c]x filter=lfs\n[[:alpha:][:digit:]]* filter=lfs\n"
    "[]] filter=lfs\n[a-] filter=lfs\n[[:bogus:]] filter=lfs\n\\*.txt filter=lfs\n"
    "\0bx\0zx\0]\0-\0*.txt")
put("gitattributes", "stars", "**/**/**/a**b**c** filter=lfs\n" + "*" * 200 + "x filter=lfs\n"
    "\0" + "a" * 100 + "/b/c")
put("gitattributes", "many-lines", "".join(f"dir{i}/*.f{i} filter=lfs\n" for i in range(300)))
put("gitattributes", "crlf-comments", "# comment\r\n\r\n*.gguf filter=lfs diff=lfs\r\n\0m.gguf")

# --- gitIgnore ------------------------------------------------------------------
put("gitignore", "basic", "*.log\nbuild/\n!keep.log\n# c\n\0a.log\0x/a.log\0keep.log\0build/out.bin")
put("gitignore", "pathological", "".join("*a" * 20 + "*b\n" for _ in range(20))
    + "\0" + "a" * 60 + "c")
put("gitignore", "dirs", "a/**/b/\n/root/\n**/\n!/root/keep/\n\0a/x/y/b/c\0root/keep/f\0z")
put("gitignore", "classes", "[a-z]*.[ch]\n[!0-9]?\n\\!bang\n\0main.c\0x1\0!bang")

# --- model card front matter ---------------------------------------------------
put("card", "typical.md", "---\nlicense: apache-2.0\nlanguage:\n- en\n- fr\ntags:\n- text\n"
    "pipeline_tag: fill-mask\nlibrary_name: transformers\ndatasets:\n- wiki\n"
    "model-index:\n- name: m\n  results: []\n---\n# Model\n")
put("card", "bom-crlf.md", "\ufeff---\r\nlicense: mit\r\n---\r\nbody\r\n")
put("card", "empty.md", "---\n---\n")
put("card", "list.md", "---\n- a\n- b\n---\n")
put("card", "alias-bomb.md", "---\na: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
              f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
              f"*{chr(97 + i)}]\n" for i in range(8)) + "---\n")
put("card", "deep.md", "---\na: " + "[" * 500 + "]" * 500 + "\n---\n")
put("card", "tags-anchor-merge.md", "---\nbase: &b {license: mit, tags: [a]}\n<<: *b\n"
    "tags: !!str 1\nlanguage: [en, 1, null]\nlicense: [apache-2.0, mit]\n---\n")
put("card", "non-string-keys.md", "---\n? [a, b]\n: 1\n1: 2\n~: 3\n---\n")
put("card", "tags-and-types.md", "---\na: !!binary aGk=\nb: .inf\nc: 0x1F\nd: 2001-12-14t21:59:43.10-05:00\n"
    "e: !custom x\n---\n")
put("card", "unterminated.md", "---\nlicense: mit\n")
put("card", "config.json", '{"architectures":["BertForMaskedLM"],"model_type":"bert","id2label":{"0":"a"}}')

# --- Markdown bodies -----------------------------------------------------------
put("markdown", "card.md", "---\nlicense: mit\n---\n# Title\n\nSome *text* with a [link](./x.md) "
    "and ![img](img.png).\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] done\n\nfoot[^1]\n\n[^1]: note\n")
put("markdown", "html.md", "<script>alert(1)</script>\n<a href=\"javascript:x\">x</a>\n"
    "[x](javascript:alert(1)) [y](java\tscript:alert(1)) [z](data:text/html,x) <http://a.b>\n")
put("markdown", "nesting.md", ">" * 200 + " x\n" + "- " * 200 + "y\n" + "*" * 300 + "z" + "*" * 300)
put("markdown", "refs.md", "[a]: /u 'title'\n[b]: <x y>\n[a][] [b] [c]\n" + "[" * 100 + "x" + "]" * 100)

# --- repo paths and Range headers -------------------------------------------------
for i, p in enumerate(["a/b/c.txt", "README.md", "../x", "a//b", "./a", "a/./b", ".git/config",
                       "a/.GIT/x", ".g\u200cit/x", "con.txt", "a\\b", "x" * 300, "a/" * 600,
                       "caf\u00e9", "cafe\u0301", "/abs", "a/b/", "bytes=0-99", "bytes=-5",
                       "bytes=5-", "bytes=99999999999999999999-1", "bytes=1-0", "a\0b"]):
    put("repo_path", f"{i:02}", p)

# --- names and revisions ------------------------------------------------------------
for i, p in enumerate(["main", "v1.0", "feature/x", "refs/pr/1", "refs/convert/parquet",
                       "a" * 40, "A" * 40, "a..b", "a.lock", "@{-1}", "a~1", "/x", "x/",
                       "ns/name", "ns/na/me", "gpt2", "-bad", "x.git", "models", "new",
                       "settings", "\u00e9", "a" * 97, "ab" * 32]):
    put("names", f"{i:02}", p)

print("seeds written under", ROOT, file=sys.stderr)
