"""A tiny character-level GPT that trains in seconds and survives being stopped.

Run it alone (`python train.py`) or under torchrun (gloo on CPUs, NCCL on GPUs). It prints
`step N loss X` lines, writes a checkpoint every --ckpt-every steps to <out>/ckpt/step-NNNNNN/
with a COMPLETE marker written last (a folder without it is a checkpoint cut off mid-write and is
never used), and resumes from $RIGDECK_RESUME_FROM: a checkpoint folder, or a folder of them (the
newest complete one is taken). Each step's batch is drawn from (seed, step, rank) alone, so a
resumed run reproduces the losses of one that never stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

TEXT = """\
It is a truth universally acknowledged, that a single man in possession of a good fortune,
must be in want of a wife. However little known the feelings or views of such a man may be on
his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding
families, that he is considered the rightful property of some one or other of their daughters.
Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my
purse, and nothing particular to interest me on shore, I thought I would sail about a little and
see the watery part of the world. It was the best of times, it was the worst of times, it was
the age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch
of incredulity, it was the season of light, it was the season of darkness.
"""

MARKER = "COMPLETE"


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int, block: int, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(block, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=idx.device), diagonal=1)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln(x))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out", help="output folder (checkpoints in <out>/ckpt)")
    p.add_argument("--steps", type=int, default=60, help="train until this step")
    p.add_argument("--ckpt-every", type=int, default=20, help="checkpoint every N steps")
    p.add_argument("--keep", type=int, default=2, help="complete checkpoints kept")
    p.add_argument("--batch", type=int, default=16, help="sequences per step per process")
    p.add_argument("--block", type=int, default=32, help="context length in characters")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--step-delay", type=float, default=0.0, help="seconds to wait per step")
    p.add_argument("--fail-at", type=int, default=0, help="exit with code 3 at this step (tests)")
    return p.parse_args()


def complete_checkpoint(path: Path) -> Path | None:
    """The checkpoint to resume from: ``path`` itself, or the newest complete one inside it."""
    if (path / MARKER).exists():
        return path
    if not path.is_dir():
        return None
    done = sorted(p for p in path.glob("step-*") if (p / MARKER).exists())
    return done[-1] if done else None


def save_checkpoint(root: Path, step: int, state: dict[str, object], keep: int) -> Path:
    target = root / f"step-{step:06d}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with open(target / "state.pt", "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    # The marker goes last: a copy or a pull taken mid-write has no marker and is skipped.
    (target / MARKER).write_text(f"{step}\n", encoding="utf-8")
    done = sorted(p for p in root.glob("step-*") if (p / MARKER).exists())
    for old in done[:-keep] if keep > 0 else []:
        (old / MARKER).unlink()
        shutil.rmtree(old)
    return target


def main() -> int:
    args = parse_args()
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    use_cuda = torch.cuda.is_available()
    rank, world, local_rank = 0, 1, 0
    if distributed:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if not use_cuda:
        # A model this small gains nothing from more threads, and on a busy machine OpenMP
        # threads spinning for a core cost more than the work itself.
        torch.set_num_threads(args.threads)
    log = print if rank == 0 else (lambda *a, **k: None)

    chars = sorted(set(TEXT))
    data = torch.tensor([chars.index(c) for c in TEXT], dtype=torch.long)
    torch.manual_seed(args.seed)
    model = TinyGPT(len(chars), args.block, args.dim, args.layers, args.heads).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0

    resume = os.environ.get("RIGDECK_RESUME_FROM", "").strip()
    if resume:
        found = complete_checkpoint(Path(resume))
        if found is None:
            log(f"no complete checkpoint in {resume}; starting from step 0")
        else:
            state = torch.load(found / "state.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            step = int(state["step"])
            log(f"resumed from {found} at step {step}")

    ddp: nn.Module = model
    if distributed:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if use_cuda else None
        )
    ckpt_root = Path(args.out) / "ckpt"
    params = sum(p.numel() for p in model.parameters())
    log(f"training {params} parameters on {world} x {device.type}")
    started = time.monotonic()
    while step < args.steps:
        step += 1
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step * 101 + rank)
        starts = torch.randint(len(data) - args.block - 1, (args.batch,), generator=gen)
        x = torch.stack([data[s : s + args.block] for s in starts.tolist()]).to(device)
        y = torch.stack([data[s + 1 : s + 1 + args.block] for s in starts.tolist()]).to(device)
        logits = ddp(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mean = loss.detach()
        if distributed:
            dist.all_reduce(mean)
            mean /= world
        log(f"step {step} loss {mean.item():.4f}")
        if args.fail_at and step == args.fail_at:
            log(f"failing at step {step} as asked")
            return 3
        if step % args.ckpt_every == 0 or step == args.steps:
            if rank == 0:
                state = {"model": model.state_dict(), "optim": opt.state_dict(), "step": step}
                save_checkpoint(ckpt_root, step, state, args.keep)
            if distributed:
                dist.barrier()  # no rank runs ahead of a checkpoint it might need to resume from
        if args.step_delay:
            time.sleep(args.step_delay)
    log(f"done: {step} steps in {time.monotonic() - started:.1f} s")
    if distributed:
        # Every rank leaves together: gloo aborts a rank whose peer tears down its pairs first.
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
