"""Job logs: normalised lines, offsets that survive reconnects, metrics; the same whatever the
pieces the bytes arrive in (every chunking of recorded logs, by hand: no hypothesis here)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from rigdeck.core.cloud.jobs.logs import (
    TRUNCATED,
    LogNormaliser,
    LogStream,
    LogTail,
    MetricParser,
    MetricPoint,
    MetricSeries,
)

BLOCK = "\u2588".encode()  # the 3-byte bar character tqdm draws with

# A Hugging Face Trainer run under tqdm: bar frames redrawn with \r, a dict line written
# through the bar (tqdm.write clears it first), CRLF endings, colour, an OSC window title.
TQDM_LOG = (
    b"\x1b]0;training\x07Loading checkpoint shards: 100%\r\n"
    b"\r  0%|          | 0/30 [00:00<?, ?it/s]"
    b"\r 33%|" + BLOCK * 3 + b"       | 10/30 [00:01<00:02, 9.8it/s]"
    b"\r"
    + b" "
    * 40
    + b"\r{'loss': 2.3125, 'grad_norm': 1.5, 'learning_rate': 5e-05, 'epoch': 0.33}\n"
    b"\r 67%|" + BLOCK * 7 + b"   | 20/30 [00:02<00:01, 9.9it/s]"
    b"\r"
    + b" "
    * 40
    + b"\r{'loss': 1.875, 'grad_norm': 1.25, 'learning_rate': 2.5e-05, 'epoch': 0.67}\n"
    b"\r100%|" + BLOCK * 10 + b"| 30/30 [00:03<00:00, 9.9it/s]\r\n"
    b"\x1b[32m\x1b[1mINFO\x1b[0m training done \xe2\x9c\x93 caf\xc3\xa9 \xf0\x9f\x9a\x80\r\n"
    b"{'train_runtime': 3.1, 'train_loss': 2.05, 'epoch': 1.0}\n"
)
TQDM_LINES = [
    "Loading checkpoint shards: 100%",
    "{'loss': 2.3125, 'grad_norm': 1.5, 'learning_rate': 5e-05, 'epoch': 0.33}",
    "{'loss': 1.875, 'grad_norm': 1.25, 'learning_rate': 2.5e-05, 'epoch': 0.67}",
    "100%|" + "\u2588" * 10 + "| 30/30 [00:03<00:00, 9.9it/s]",
    "INFO training done \u2713 caf\u00e9 \U0001f680",
    "{'train_runtime': 3.1, 'train_loss': 2.05, 'epoch': 1.0}",
]

# torchrun with --tee: rank prefixes, both ranks talking, a resume that repeats steps 3 and 4,
# key=value and JSON lines, an invalid byte, a line over the cap and an unfinished last line.
TORCHRUN_LOG = (
    b"[default0]:step 1 loss 3.50\n[default1]:step 1 loss 9.99\n"
    b"[default0]:step 2 loss 3.25\r\n"
    b"[default0]:step=3 loss=3.0 lr=3e-4\n[default0]:step=4 loss=2.9 lr=3e-4\n"
    b"[rank0]:resumed from out/ckpt/step-000002 at step 2\n"
    b'[rank0]:{"step": 3, "loss": 2.95}\n[rank0]:{"step": 4, "loss": 2.85}\n'
    b"[rank0]:Step 5/10 | loss: 2.7 | ppl: 14.9 | 0.21 s/it\n"
    b"bad byte \xff here; loaded 100 files\n" + b"x" * 150 + b"\n"
    b"[default0]:step 6 loss nan\n"
    b"[default0]:step 7 los"
)
TORCHRUN_LINES_HEAD = [
    "[default0]:step 1 loss 3.50",
    "[default1]:step 1 loss 9.99",
    "[default0]:step 2 loss 3.25",
]

SMALL_TRICKY = "é\r\n█\rx\x1b[1;31mz\x1b[0m\r\r\n😀\x1b]2;t\x1b\\ok\n\r".encode()

MAX_LINE = 100


def one_shot(data: bytes) -> tuple[list[str], str, list[str]]:
    norm = LogNormaliser(max_line_chars=MAX_LINE)
    lines = norm.feed(data)
    partial = norm.partial
    return lines, partial, norm.flush()


def chunked(data: bytes, cuts: list[int]) -> tuple[list[str], str, list[str]]:
    norm = LogNormaliser(max_line_chars=MAX_LINE)
    lines: list[str] = []
    edges = [0, *cuts, len(data)]
    for a, b in itertools.pairwise(edges):
        lines += norm.feed(data[a:b])
    partial = norm.partial
    return lines, partial, norm.flush()


def chunkings(data: bytes, seed: int) -> list[list[int]]:
    """Fixed sizes 1..17, every single cut, and seeded random cut sets."""
    n = len(data)
    out = [list(range(size, n, size)) for size in range(1, 18)]
    out += [[i] for i in range(n + 1)]
    rng = random.Random(seed)
    for _ in range(200):
        k = rng.randint(1, min(40, n))
        out.append(sorted(rng.sample(range(n + 1), k)))
    return out


def test_tqdm_log_reads_as_its_final_frames_without_escapes():
    lines, partial, rest = one_shot(TQDM_LOG)
    assert lines == TQDM_LINES
    assert partial == "" and rest == []


def test_torchrun_log_lines_keep_text_and_cap_long_lines():
    lines, partial, rest = one_shot(TORCHRUN_LOG)
    assert lines[:3] == TORCHRUN_LINES_HEAD
    assert "bad byte \ufffd here; loaded 100 files" in lines
    long = next(line for line in lines if line.startswith("xxx"))
    assert long == "x" * MAX_LINE + TRUNCATED
    assert partial == "[default0]:step 7 los"
    assert rest == ["[default0]:step 7 los"]


@pytest.mark.parametrize(
    ("data", "seed"),
    [(TQDM_LOG, 1), (TORCHRUN_LOG, 2), (SMALL_TRICKY, 3)],
    ids=["tqdm", "torchrun", "tricky"],
)
def test_every_chunking_gives_the_same_lines_partial_and_metrics(data, seed):
    expected = one_shot(data)
    expected_points = MetricParser().parse_all(expected[0] + expected[2])
    assert expected_points or data is SMALL_TRICKY
    for cuts in chunkings(data, seed):
        got = chunked(data, cuts)
        assert got == expected, f"cuts {cuts}"
        points = MetricParser().parse_all(got[0] + got[2])
        assert repr(points) == repr(expected_points), f"cuts {cuts}"  # repr: nan == nan


def test_every_pair_of_cuts_in_a_short_tricky_log():
    expected = one_shot(SMALL_TRICKY)
    assert expected[0] == ["é", "xz", "😀ok"]
    n = len(SMALL_TRICKY)
    for a in range(n + 1):
        for b in range(a, n + 1):
            assert chunked(SMALL_TRICKY, [a, b]) == expected, (a, b)


def test_progress_bar_without_newline_shows_its_last_frame_in_bounded_memory():
    norm = LogNormaliser(max_line_chars=80)
    frames = [f"{i:6d}/20000 [{'#' * (i % 40):40s}]" for i in range(20000)]
    for frame in frames:
        assert norm.feed(("\r" + frame).encode()) == []
        assert norm.partial == frame
    norm.feed(b"y" * 1_000_000)  # a huge line without a newline never grows the buffer
    assert len(norm.partial) == 81
    assert norm.feed(b"\nnext\n") == [(frames[-1] + "y" * 80)[:80] + TRUNCATED, "next"]
    assert norm.partial == ""


def test_a_broken_escape_never_swallows_the_next_line():
    norm = LogNormaliser()
    assert norm.feed(b"a\x1b]0;never closed\nb\n\x1b[12\nc\n") == ["a", "b", "", "c"]


def test_stream_offsets_after_reconnects_and_restarts_give_each_line_once():
    data = TQDM_LOG + TORCHRUN_LOG + b"\n"
    expected = one_shot(data)[0]
    rng = random.Random(7)
    for trial in range(100):
        shown: list[str] = []
        stream = LogStream(max_line_chars=MAX_LINE)
        while stream.offset < len(data):
            piece = data[stream.offset : stream.offset + rng.randint(1, 64)]  # one read
            shown += stream.feed(piece)
            if rng.random() < 0.1:
                # rigdeck itself restarted: it kept the lines it had shown and the persisted
                # resume offset, not the reader's partial line.
                stream = LogStream(stream.resume_offset, max_line_chars=MAX_LINE)
        assert shown == expected, f"trial {trial}"
        assert stream.resume_offset == len(data)


def test_stream_restarts_when_the_log_shrinks():
    stream = LogStream()
    stream.feed(b"old line\nold partial")
    assert stream.check_size(100) is False
    assert stream.check_size(4) is True
    assert stream.offset == 0 and stream.partial == ""
    assert stream.feed(b"new\n") == ["new"]


def test_log_tail_keeps_the_last_lines_and_counts_the_rest():
    tail = LogTail(max_lines=3)
    tail.extend(f"line {i}" for i in range(10))
    assert list(tail) == ["line 7", "line 8", "line 9"]
    assert tail.total == 10 and tail.dropped == 7
    assert tail.last(2) == ["line 8", "line 9"]


@pytest.mark.parametrize(
    ("line", "points"),
    [
        (
            "{'loss': 2.31, 'learning_rate': 5e-05, 'epoch': 0.1}",
            [(1, "loss", 2.31), (1, "learning_rate", 5e-05), (1, "epoch", 0.1)],
        ),
        ("step 100 loss 2.31", [(100, "loss", 2.31)]),
        ("step=100 loss=2.31 lr=3e-4", [(100, "loss", 2.31), (100, "lr", 3e-4)]),
        ('{"step": 100, "loss": 2.31}', [(100, "loss", 2.31)]),
        ("[default0]:step 5 loss 1.5", [(5, "loss", 1.5)]),
        ("[rank0]: Step 7/100 | Loss: 0.5 | ppl: 1.6", [(7, "loss", 0.5), (7, "ppl", 1.6)]),
        ("[rank1]:step 5 loss 9.0", []),
        ('{"global_step": 9, "train/loss": 1.25}', [(9, "train/loss", 1.25)]),
        ("iter 3: loss -0.5, acc 0.75", [(3, "loss", -0.5), (3, "acc", 0.75)]),
        ("loaded 100 files in 2 s", []),
        ("done: 60 steps in 13.7 s", []),
        ("resumed from out/ckpt/step-000020 at step 20", []),
        ("[rigdeck] job my-loss-1: 0 GPU(s)", []),
        ('{"level": "info", "msg": "hi"}', []),
        ("{'loss': 'oops'", []),
    ],
)
def test_metric_lines_in_common_formats(line, points):
    got = MetricParser().parse(line)
    assert [(p.step, p.name, p.value) for p in got] == points


def test_lines_without_a_step_count_steps_per_metric():
    parser = MetricParser()
    got = parser.parse_all(
        [
            "{'loss': 2.0, 'epoch': 0.5}",
            "{'loss': 1.5, 'epoch': 1.0}",
            "{'eval_loss': 1.7, 'epoch': 1.0}",
            "{'loss': 1.25, 'epoch': 1.5}",
        ]
    )
    loss = [(p.step, p.value) for p in got if p.name == "loss"]
    evals = [(p.step, p.value) for p in got if p.name == "eval_loss"]
    assert loss == [(1, 2.0), (2, 1.5), (3, 1.25)]
    assert evals == [(1, 1.7)]


def test_a_resumed_job_does_not_draw_repeated_steps_twice():
    lines, _, rest = one_shot(TORCHRUN_LOG)
    series = MetricSeries()
    series.extend(MetricParser().parse_all(lines + rest))
    loss = series.points("loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4, 5, 6]
    assert dict(loss)[1] == 3.5  # rank 1's value never enters
    assert dict(loss)[3] == 2.95 and dict(loss)[4] == 2.85  # the resumed run's values win
    assert math.isnan(dict(loss)[6])
    assert [s for s, _ in series.finite("loss")] == [1, 2, 3, 4, 5]
    assert series.latest("ppl") == MetricPoint(5, "ppl", 14.9)
    assert series.names() == ["loss", "lr", "ppl"]


def test_metric_series_stays_bounded_and_keeps_the_curve_ends():
    series = MetricSeries(max_points=100, max_metrics=2)
    for step in range(1, 10_001):
        series.add(MetricPoint(step, "loss", 1.0 / step))
    series.add(MetricPoint(1, "a", 1.0))
    series.add(MetricPoint(1, "b", 1.0))  # over max_metrics: ignored
    pts = series.points("loss")
    assert len(pts) <= 100
    assert pts[0][0] == 1 and pts[-1][0] == 10_000
    assert [s for s, _ in pts] == sorted(s for s, _ in pts)
    assert series.names() == ["loss", "a"]
