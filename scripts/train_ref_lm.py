"""Train the reference LMs (``ref-lm`` and ``ref-lm-draft``) on the Python standard library.

Byte-level BPE tokenizer (``tokenizers``) on the train split, then a Llama-architecture
causal LM (GQA, RMSNorm, SwiGLU, RoPE) with AdamW, linear warm-up and cosine decay over a
wall-clock (or step) budget. The best-validation weights are saved as fp16 safetensors with
``save_pretrained`` after every evaluation, so an interrupted run still leaves usable weights.

    python scripts/train_ref_lm.py tokenizer            # tokenizer + test/calibration tokens
    python scripts/train_ref_lm.py train --model ref-lm --minutes 75
    python scripts/train_ref_lm.py train --model ref-lm-draft --minutes 15
    python scripts/train_ref_lm.py evaluate --model ref-lm   # test ppl + int4 RTN g128 → metrics.json

For an exact re-run pass ``--steps`` (the step count recorded in metrics.json) instead of
``--minutes``: the schedule then depends on the step count only, not on machine speed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from optimizers.workloads import corpus  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "optimizers" / "workloads" / "assets"
TOK_DIR = ASSETS / "ref-lm"
EOS = "<|endoftext|>"

CONFIGS = {
    # hidden 256, 8 query heads / 2 KV heads (head_dim 32); every Linear's in_features is a
    # multiple of 128 so int4 group-128 applies everywhere.
    "ref-lm": dict(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
    ),
    "ref-lm-draft": dict(
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
}
COMMON = dict(
    max_position_embeddings=1024,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    tie_word_embeddings=False,
    hidden_act="silu",
)


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus.read_split("train"), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def load_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOK_DIR)


def encode_split(tok, split: str) -> torch.Tensor:
    """All files of ``split`` as one stream, each file followed by EOS: (N,) int64."""
    ids: list[int] = []
    for enc in tok(corpus.read_split(split), add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tok.eos_token_id)
    return torch.tensor(ids, dtype=torch.int64)


def cmd_tokenizer(args) -> None:
    from safetensors.torch import save_file

    t0 = time.time()
    tok = train_tokenizer(args.vocab)
    TOK_DIR.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(TOK_DIR)
    test = encode_split(tok, "test")
    train = encode_split(tok, "train")
    g = torch.Generator().manual_seed(args.seed)
    starts = torch.randint(0, len(train) - args.seq, (args.calib_batches,), generator=g)
    calib = torch.stack([train[s : s + args.seq] for s in starts.tolist()])  # (B, T)
    save_file({"token_ids": test[: args.test_tokens].to(torch.int32).contiguous()}, TOK_DIR / "test_tokens.safetensors")
    save_file({"token_ids": calib.to(torch.int32).contiguous()}, TOK_DIR / "calibration_tokens.safetensors")
    n_bytes = sum(len(t.encode()) for t in corpus.read_split("train"))
    print(
        f"tokenizer vocab={len(tok)} train tokens={len(train):,} ({n_bytes / len(train):.2f} bytes/token) "
        f"test tokens={len(test):,} (kept {min(len(test), args.test_tokens):,}) in {time.time() - t0:.0f}s"
    )


# ----------------------------------------------------------------------------- model


def build_model(name: str, vocab_size: int, eos_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id,
        **CONFIGS[name], **COMMON,
    )
    cfg._attn_implementation = "sdpa"
    return LlamaForCausalLM(cfg)


@torch.no_grad()
def mean_loss(model, windows: torch.Tensor, batch: int = 16) -> float:
    """Mean next-token loss over (N, T) windows (each window scored on its own)."""
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(windows), batch):
        x = windows[i : i + batch]
        logits = model(input_ids=x).logits[:, :-1].float()  # (B, T-1, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
        tot += loss.item()
        n += x[:, 1:].numel()
    model.train()
    return tot / n


def save_fp16(model, out: Path) -> None:
    import copy

    m = copy.deepcopy(model).to(torch.float16)
    m.config.torch_dtype = "float16"
    m.save_pretrained(out, safe_serialization=True)


def lr_at(progress: float, warmup_frac: float, peak: float, floor: float) -> float:
    if progress < warmup_frac:
        return peak * progress / warmup_frac
    p = min(1.0, (progress - warmup_frac) / (1 - warmup_frac))
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * p))


def cmd_train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tok = load_tokenizer()
    out = ASSETS / args.model
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)  # each model directory loads on its own (e.g. through load_hf)
    train = encode_split(tok, "train")
    val = encode_split(tok, "validation")
    nval = min(args.val_windows, len(val) // args.seq)
    val_windows = val[: nval * args.seq].view(nval, args.seq)  # (Nv, T) fixed
    model = build_model(args.model, len(tok), tok.eos_token_id)
    before = {}
    if args.init_from:  # continue training saved weights (e.g. the committed ones) instead of a fresh init
        from safetensors.torch import load_file

        src = Path(args.init_from)
        model.load_state_dict({k: v.float() for k, v in load_file(src / "model.safetensors").items()}, strict=True)
        info_file = src / "train_info.json"
        before = json.loads(info_file.read_text()) if info_file.exists() else {}
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {n_params / 1e6:.2f} M params, train stream {len(train):,} tokens, "
          f"threads={args.threads}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    g = torch.Generator().manual_seed(args.seed)
    budget_s = args.minutes * 60
    t0 = time.time()
    step, tokens, best, last_eval, history = 0, 0, float("inf"), t0, []
    if args.init_from:
        best = mean_loss(model, val_windows)  # only an improvement on the loaded weights is saved
        print(f"continuing from {args.init_from}: val_loss {best:.4f}", flush=True)
    while True:
        elapsed = time.time() - t0
        progress = step / args.steps if args.steps else elapsed / budget_s
        if progress >= 1.0:
            break
        lr = lr_at(progress, args.warmup, args.lr, args.lr * 0.1)
        for gr in opt.param_groups:
            gr["lr"] = lr
        starts = torch.randint(0, len(train) - args.seq - 1, (args.batch,), generator=g)
        x = torch.stack([train[s : s + args.seq] for s in starts.tolist()])  # (B, T)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += x.numel()
        if step % args.log_every == 0:
            el = time.time() - t0
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} tok {tokens:,} {tokens / el:.0f} tok/s {el / 60:.1f} min", flush=True)
        if time.time() - last_eval >= args.eval_minutes * 60:
            last_eval = time.time()
            best = _evaluate_and_save(model, val_windows, step, tokens, t0, best, history, out, args)
    best = _evaluate_and_save(model, val_windows, step, tokens, t0, best, history, out, args)
    train_info = {
        "params": n_params, "steps": step, "tokens_seen": tokens, "train_seconds": round(time.time() - t0, 1),
        "tokens_per_s": round(tokens / (time.time() - t0), 1), "batch": args.batch, "seq": args.seq,
        "lr": args.lr, "warmup_frac": args.warmup, "weight_decay": args.wd, "seed": args.seed,
        "threads": args.threads, "best_val_loss": round(best, 4), "best_val_ppl": round(math.exp(best), 3),
        "val_history": history, "train_stream_tokens": len(train),
    }
    if args.init_from:  # cumulative figures over both sessions of training
        train_info["continued"] = {"from": str(args.init_from), "earlier_steps": before.get("steps"),
                                   "earlier_tokens_seen": before.get("tokens_seen"),
                                   "earlier_train_seconds": before.get("train_seconds"), "earlier_lr": before.get("lr")}
    (out / "train_info.json").write_text(json.dumps(train_info, indent=1))
    print(json.dumps({k: v for k, v in train_info.items() if k != "val_history"}), flush=True)


def _evaluate_and_save(model, val_windows, step, tokens, t0, best, history, out, args) -> float:
    vl = mean_loss(model, val_windows)
    el = time.time() - t0
    history.append({"step": step, "tokens": tokens, "minutes": round(el / 60, 2), "val_loss": round(vl, 4)})
    mark = ""
    if vl < best:
        best = vl
        save_fp16(model, out)
        mark = " (saved)"
    print(f"EVAL step {step} tokens {tokens:,} val_loss {vl:.4f} val_ppl {math.exp(vl):.2f}{mark}", flush=True)
    return best


# ----------------------------------------------------------------------------- evaluation


def fake_quant_int4_rtn(model, group_size: int = 128) -> int:
    """Replace every Linear weight except lm_head by its int4 RTN (asymmetric, per group) copy."""
    from quant.packing import dequantize_int4_groupwise, pack_int4, quantize_int4_groupwise

    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
            codes, scale, zero = quantize_int4_groupwise(mod.weight.data, group_size)
            w = dequantize_int4_groupwise(pack_int4(codes), scale, zero, group_size)
            mod.weight.data.copy_(w.to(mod.weight.dtype))
            n += 1
    return n


def cmd_evaluate(args) -> None:
    from optimizers.workloads import ref_lm

    torch.set_num_threads(args.threads)
    wl = ref_lm.load(args.model)
    ids = wl.eval.token_ids
    n_params = sum(p.numel() for p in wl.model.parameters())
    full = dict(window=wl.eval.window, stride=wl.eval.stride, max_windows=None)
    t0 = time.time()
    ppl = ref_lm.perplexity(wl.model, ids, **full)
    ppl_eval = ref_lm.perplexity(wl.model, ids, wl.eval.window, wl.eval.stride, wl.eval.max_windows)
    val = encode_split(wl.tokenizer, "validation")
    val_ppl = ref_lm.perplexity(wl.model, val, wl.eval.window, wl.eval.stride, max_windows=len(ids) // wl.eval.window)
    nq = fake_quant_int4_rtn(wl.model, 128)
    ppl_q = ref_lm.perplexity(wl.model, ids, **full)
    ppl_q_eval = ref_lm.perplexity(wl.model, ids, wl.eval.window, wl.eval.stride, wl.eval.max_windows)
    info = json.loads((ASSETS / args.model / "train_info.json").read_text()) if (ASSETS / args.model / "train_info.json").exists() else {}
    m = {
        "params": n_params,
        "config": {k: wl.meta["config"][k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")},
        "test_tokens": int(len(ids)),
        "window": wl.eval.window, "stride": wl.eval.stride,
        "test_ppl": round(ppl, 4),
        "test_ppl_eval_protocol": round(ppl_eval, 4), "eval_max_windows": wl.eval.max_windows,
        "validation_ppl": round(val_ppl, 4), "validation_tokens": int(len(ids)),
        "int4_rtn_g128_test_ppl": round(ppl_q, 4),
        "int4_rtn_g128_delta_pct": round(100 * (ppl_q / ppl - 1), 3),
        "int4_rtn_g128_test_ppl_eval_protocol": round(ppl_q_eval, 4),
        "int4_rtn_g128_linears": nq,
        **{k: info[k] for k in ("steps", "tokens_seen", "train_seconds", "tokens_per_s", "batch", "seq", "lr", "seed", "threads", "best_val_ppl") if k in info},
    }
    path = TOK_DIR / "metrics.json"
    allm = json.loads(path.read_text()) if path.exists() else {}
    allm[args.model] = m
    path.write_text(json.dumps(allm, indent=1) + "\n")
    print(json.dumps(m, indent=1), f"\n({time.time() - t0:.0f}s)")


def cmd_bench(args) -> None:
    """Training tokens/s of each config at a few thread counts (to choose the size)."""
    tok = load_tokenizer()
    for threads in args.bench_threads:
        torch.set_num_threads(threads)
        for name in CONFIGS:
            model = build_model(name, len(tok), tok.eos_token_id)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            x = torch.randint(0, len(tok), (args.batch, args.seq))
            for i in range(6):
                if i == 2:
                    t = time.time()
                loss = model(input_ids=x, labels=x).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
            dt = (time.time() - t) / 4
            print(f"{name} threads={threads} {args.batch * args.seq / dt:.0f} tok/s ({dt:.2f} s/step)", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["tokenizer", "train", "evaluate", "bench"])
    ap.add_argument("--model", choices=list(CONFIGS), default="ref-lm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--init-from", default=None, help="continue training the model saved in this directory")
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=float, default=0.03, help="fraction of the budget spent warming up")
    ap.add_argument("--minutes", type=float, default=75.0, help="wall-clock budget (ignored with --steps)")
    ap.add_argument("--steps", type=int, default=0, help="step budget; makes the schedule machine-independent")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-minutes", type=float, default=5.0)
    ap.add_argument("--val-windows", type=int, default=64)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--test-tokens", type=int, default=65536)
    ap.add_argument("--calib-batches", type=int, default=32)
    ap.add_argument("--bench-threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    {"tokenizer": cmd_tokenizer, "train": cmd_train, "evaluate": cmd_evaluate, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    main()
