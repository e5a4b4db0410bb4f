"""Two lossy KV caches for any transformers Llama-style causal LM, and the measurements that
show what they cost: the KV cache, not the weights, is what fills memory at long context and
large batch, so a cache that stores less is a serving optimization in its own right.

* :class:`QuantizedKVCache` — KV-cache quantization as in KIVI (Liu et al., "KIVI: A
  Tuning-Free Asymmetric 2bit Quantization for KV Cache", ICML 2024) and the int8 KV caches of
  vLLM and TensorRT-LLM: keys and values are stored as int8 codes (``bits=8``) or packed int4
  codes (``bits=4``, two a byte) with one symmetric absmax scale per token and head (over
  head_dim), kept in float16 — stored bytes are counted with those 2-byte scales, not with a
  float32 copy. KIVI's residual (``residual`` most recent tokens kept in full precision) is
  optional. Attention reads the dequantized states, so outputs differ from a full-precision
  cache only by the quantization error. (Per-token scales for keys and values alike, where
  KIVI quantizes keys per channel: a per-token code can be appended without re-quantizing the
  past, which is what the serving engines' int8 caches do.)
* :class:`SinkCache` — StreamingLLM (Xiao et al., "Efficient Streaming Language Models with
  Attention Sinks", ICLR 2024): keeps the first ``sink`` tokens and the most recent ``window``
  ones, so memory is bounded by ``sink + window`` tokens whatever the length. Positions are
  StreamingLLM's, *within the cache*: see the class docstring for how RoPE keys are re-rotated.
* :func:`chunked_perplexity` / :func:`cache_stats` — perplexity with each window fed in chunks
  through a cache (each chunk attends to the cached past and itself), so a lossy cache's quality
  cost shows up; with a plain ``DynamicCache`` it reproduces the one-pass perplexity.

Both caches are ``transformers.Cache`` objects built from per-layer ``DynamicLayer``
subclasses, passed as ``cache=`` (transformers ≥ 5.24; ``past_key_values=`` still works there,
with a deprecation warning) to the model's own forward: the attention is the model's.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, get_layer_types_and_kwargs

from optimizers import metrics as M

_FP16_TINY = torch.finfo(torch.float16).tiny  # smallest normal fp16: the floor of a stored scale
_FP16_MAX = torch.finfo(torch.float16).max


def _attention_layer_count(config: Any, what: str) -> int:
    """Number of decoder layers, refusing configs with non-full-attention layers (sliding
    windows, linear attention, KV sharing): these caches hold one full-attention KV per layer."""
    cfg = config.get_text_config(decoder=True)
    layer_types, _ = get_layer_types_and_kwargs(cfg)
    odd = sorted({t for t in layer_types if t != "full_attention"})
    if odd:
        raise ValueError(f"{what} supports full-attention layers only; config.layer_types has {odd} "
                         f"(use transformers' DynamicCache for this model)")
    return len(layer_types)


def _tensor_bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


# ---------------------------------------------------------------- quantized KV


def quantize_per_token(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantization of ``x`` (..., D) over its last dimension: returns the codes
    (int8 (..., D) for ``bits=8``; uint8 (..., D/2) for ``bits=4``, element 2i in the low nibble
    and 2i+1 in the high one, each stored as code + 8) and the float16 scales (..., 1). The
    codes are computed against the float16-rounded scale, so dequantization reproduces them."""
    if bits not in (4, 8):
        raise ValueError(f"bits={bits}; KV codes are 8 (int8) or 4 (packed int4)")
    qmax = 127 if bits == 8 else 7
    amax = x.detach().abs().amax(dim=-1, keepdim=True).float()
    scale = (amax / qmax).clamp(_FP16_TINY, _FP16_MAX).to(torch.float16)
    q = torch.round(x.float() / scale.float()).clamp_(-qmax, qmax)
    if bits == 8:
        return q.to(torch.int8), scale
    if x.shape[-1] % 2:
        raise ValueError(f"bits=4 packs two values a byte and needs an even head_dim, not {x.shape[-1]}")
    u = (q + 8).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4), scale


def dequantize_per_token(codes: torch.Tensor, scale: torch.Tensor, bits: int, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`quantize_per_token`: codes × scale, in ``dtype``."""
    if bits == 8:
        q = codes.float()
    else:
        lo = (codes & 0x0F).to(torch.int8) - 8
        hi = (codes >> 4).to(torch.int8) - 8
        q = torch.stack((lo, hi), dim=-1).flatten(-2).float()
    return (q * scale.float()).to(dtype)


class QuantizedKVLayer(DynamicLayer):
    """One layer of :class:`QuantizedKVCache`: int8 / packed-int4 codes with float16 per-token
    scales for all but the ``residual`` most recent tokens, which ``keys`` / ``values`` hold in
    the model's dtype (the same attributes transformers' own ``QuantizedLayer`` keeps its
    full-precision residual in). Tensors are (batch, kv_heads, tokens, head_dim)."""

    is_croppable = True

    def __init__(self, bits: int = 8, residual: int = 0):
        super().__init__()
        self.bits, self.residual = bits, residual
        self.k_codes = self.k_scale = self.v_codes = self.v_scale = None
        self.dtype: torch.dtype | None = None
        self.head_dim = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.dtype, self.head_dim = key_states.dtype, key_states.shape[-1]
        b, h, _, dk = key_states.shape
        dv = value_states.shape[-1]
        per_byte = 8 // self.bits  # codes a byte: 1 (int8) or 2 (packed int4)
        code_dtype = torch.int8 if self.bits == 8 else torch.uint8
        self.keys = key_states.new_empty((b, h, 0, dk))
        self.values = value_states.new_empty((b, h, 0, dv))
        self.k_codes = torch.empty((b, h, 0, dk // per_byte), dtype=code_dtype, device=self.device)
        self.v_codes = torch.empty((b, h, 0, dv // per_byte), dtype=code_dtype, device=self.device)
        self.k_scale = torch.empty((b, h, 0, 1), dtype=torch.float16, device=self.device)
        self.v_scale = torch.empty((b, h, 0, 1), dtype=torch.float16, device=self.device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new states (quantized, unless they stay in the residual) and return the
        whole layer's keys and values for attention: dequantized codes, then the residual."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        spill = keys.shape[-2] - self.residual  # tokens leaving (or never entering) the residual
        if spill > 0:
            kq, ks = quantize_per_token(keys[..., :spill, :], self.bits)
            vq, vs = quantize_per_token(values[..., :spill, :], self.bits)
            self.k_codes = torch.cat([self.k_codes, kq], dim=-2)
            self.k_scale = torch.cat([self.k_scale, ks], dim=-2)
            self.v_codes = torch.cat([self.v_codes, vq], dim=-2)
            self.v_scale = torch.cat([self.v_scale, vs], dim=-2)
            keys, values = keys[..., spill:, :], values[..., spill:, :]
        self.keys, self.values = keys, values
        full_k = torch.cat([dequantize_per_token(self.k_codes, self.k_scale, self.bits, self.dtype), self.keys], dim=-2)
        full_v = torch.cat([dequantize_per_token(self.v_codes, self.v_scale, self.bits, self.dtype), self.values], dim=-2)
        return full_k, full_v

    def get_seq_length(self) -> int:
        if not self.is_initialized:
            return 0
        return self.k_codes.shape[-2] + self.keys.shape[-2]

    def _tensors(self) -> list[str]:
        return ["keys", "values", "k_codes", "k_scale", "v_codes", "v_scale"]

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if self.is_initialized:
            for name in self._tensors():
                setattr(self, name, fn(getattr(self, name)))

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` tokens (negative, as transformers' ``crop``
        passes it), from the residual first, then from the codes: nothing is re-quantized. With
        a residual, the tokens left are not moved back into it, so until it refills fewer than
        ``residual`` recent tokens are in full precision."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop({tokens_to_remove}): pass a negative count of tokens to remove")
        n = min(-tokens_to_remove, self.get_seq_length())
        if n == 0:
            return
        from_res = min(n, self.keys.shape[-2])
        self.keys, self.values = self.keys[..., : self.keys.shape[-2] - from_res, :], self.values[..., : self.values.shape[-2] - from_res, :]
        keep = self.k_codes.shape[-2] - (n - from_res)
        for name in ("k_codes", "k_scale", "v_codes", "v_scale"):
            setattr(self, name, getattr(self, name)[..., :keep, :])

    def reset(self) -> None:
        super().reset()
        self.k_codes = self.k_scale = self.v_codes = self.v_scale = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._apply(lambda t: t[indices, ...])

    def offload(self) -> None:
        self._apply(lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self) -> None:
        if self.is_initialized and self.keys.device != self.device:
            self._apply(lambda t: t.to(self.device, non_blocking=True))

    def stored_bytes(self) -> int:
        if not self.is_initialized:
            return 0
        return _tensor_bytes(*(getattr(self, n) for n in self._tensors()))

    def element_count(self) -> int:
        """Elements of the keys and values this layer represents (all tokens, both tensors)."""
        if not self.is_initialized:
            return 0
        b, h = self.keys.shape[:2]
        return b * h * self.get_seq_length() * (self.keys.shape[-1] + self.values.shape[-1])


class QuantizedKVCache(Cache):
    """KV cache storing keys and values as int8 (``bits=8``) or packed int4 (``bits=4``) codes
    with a float16 symmetric absmax scale per token and head, the ``residual`` most recent
    tokens (KIVI's full-precision residual; default 0) in the model's dtype. Use as
    ``model(input_ids=..., cache=QuantizedKVCache(model.config), use_cache=True)``.

    ``stored_bytes()`` is what the cache holds (codes + scales + residual);
    ``full_precision_bytes()`` what a ``DynamicCache`` of the same tokens holds in the model's
    dtype; ``bytes_vs_16bit()`` stored bytes over a 16-bit copy (2 bytes an element)."""

    def __init__(self, config: Any, bits: int = 8, residual: int = 0):
        if bits not in (4, 8):
            raise ValueError(f"bits={bits!r}; QuantizedKVCache stores 8-bit (bits=8) or packed 4-bit (bits=4) codes")
        if not isinstance(residual, int) or residual < 0:
            raise ValueError(f"residual={residual!r}; the full-precision residual is a token count ≥ 0 (0 = quantize all)")
        n = _attention_layer_count(config, "QuantizedKVCache")
        self.bits, self.residual = bits, residual
        super().__init__(layers=[QuantizedKVLayer(bits, residual) for _ in range(n)])

    def stored_bytes(self) -> int:
        """Bytes the cache holds: int8/uint8 codes, float16 scales and the full-precision residual."""
        return sum(layer.stored_bytes() for layer in self.layers)

    def full_precision_bytes(self) -> int:
        """Bytes a plain cache of the same tokens would hold in the model's dtype."""
        return sum(layer.element_count() * layer.dtype.itemsize for layer in self.layers if layer.is_initialized)

    def bytes_vs_16bit(self) -> float:
        """Stored bytes over a 16-bit copy of the same keys and values (2 bytes an element)."""
        elements = sum(layer.element_count() for layer in self.layers)
        if elements == 0:
            raise ValueError("bytes_vs_16bit of an empty cache: run a forward through it first")
        return self.stored_bytes() / (2.0 * elements)


# ---------------------------------------------------------------- attention sinks


def _rope_inv_freq(config: Any) -> torch.Tensor:
    """The model's RoPE inverse frequencies, computed as transformers' rotary embedding does
    (``LlamaRotaryEmbedding``: the default formula, or ``ROPE_INIT_FUNCTIONS[rope_type]``)."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = config.get_text_config(decoder=True)
    params = getattr(cfg, "rope_parameters", None) or {}
    if params and not isinstance(params.get("rope_type", "default"), str):
        raise ValueError("SinkCache needs one rope_parameters for every layer; this config has them per layer type")
    rope_type = params.get("rope_type", "default")
    if rope_type in ("dynamic", "longrope"):
        raise ValueError(f"rope_type={rope_type!r} changes its frequencies with the sequence length, so a shift "
                         f"of cached keys is not one rotation; SinkCache supports default/linear/llama3/yarn RoPE")
    if rope_type == "default":
        base = params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"rope_type={rope_type!r} is not one transformers knows ({sorted(ROPE_INIT_FUNCTIONS)})")
    inv_freq, _ = ROPE_INIT_FUNCTIONS[rope_type](cfg)
    return inv_freq.float()


def rotate_keys(keys: torch.Tensor, shift: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotate RoPE keys (B, H, T, D) by ``shift`` positions (T,) — ``R(p)k ↦ R(p + shift)k`` —
    in float32, with transformers' half-split layout (``rotate_half``) over the first
    2·len(inv_freq) dims (the rest, under partial rotary, untouched). The model's attention
    scaling (YaRN) is already in the keys and is not applied again."""
    rd = 2 * inv_freq.numel()
    freqs = shift.to(torch.float32)[:, None] * inv_freq.to(keys.device)[None, :]  # (T, rd/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    k = keys[..., :rd].float()
    half = rd // 2
    rot = torch.cat((-k[..., half:], k[..., :half]), dim=-1)
    out = (k * cos + rot * sin).to(keys.dtype)
    return out if rd == keys.shape[-1] else torch.cat((out, keys[..., rd:]), dim=-1)


class SinkLayer(DynamicLayer):
    """One layer of :class:`SinkCache`. ``keys`` / ``values`` hold at most ``sink + window``
    tokens; ``positions`` (int64, one per token) the RoPE position each stored key was rotated
    at. ``update`` returns the stored tokens plus the new ones with every key rotated to its
    index in that set (StreamingLLM's positions), then evicts down to ``sink + window``."""

    def __init__(self, sink: int, window: int, inv_freq: torch.Tensor):
        super().__init__()
        self.sink, self.window, self.inv_freq = sink, window, inv_freq
        self.positions: torch.Tensor | None = None
        self.seen_tokens = 0  # every token ever fed, evicted or not

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        b, h, _, d = key_states.shape
        self.keys = key_states.new_empty((b, h, 0, d))
        self.values = value_states.new_empty((b, h, 0, value_states.shape[-1]))
        self.positions = torch.empty(0, dtype=torch.long, device=self.device)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        stored, n = self.keys.shape[-2], key_states.shape[-2]
        # The model rotated the new keys at get_seq_length() + i = stored + i (their index here)
        new_pos = torch.arange(stored, stored + n, device=self.device)
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        positions = torch.cat([self.positions, new_pos])
        shift = torch.arange(stored + n, device=self.device) - positions  # ≤ 0: tokens evicted since
        attend_keys = rotate_keys(keys, shift, self.inv_freq) if bool((shift != 0).any()) else keys
        total, cap = stored + n, self.sink + self.window
        if total > cap:
            keep = torch.cat([torch.arange(self.sink, device=self.device),
                              torch.arange(total - self.window, total, device=self.device)])
            self.keys, self.values, self.positions = keys[..., keep, :], values[..., keep, :], positions[keep]
        else:
            self.keys, self.values, self.positions = keys, values, positions
        self.seen_tokens += n
        return attend_keys, values

    def cached_keys(self) -> torch.Tensor:
        """The stored keys rotated to their index in the cache (what the next token attends to)."""
        shift = torch.arange(self.keys.shape[-2], device=self.device) - self.positions
        return rotate_keys(self.keys, shift, self.inv_freq)

    def crop(self, tokens_to_remove: int) -> None:
        if self.seen_tokens > self.keys.shape[-2]:
            raise ValueError("SinkCache cannot crop once it has evicted tokens: the evicted states are gone")
        super().crop(tokens_to_remove)
        if tokens_to_remove < 0 and self.is_initialized:
            self.positions = self.positions[: self.keys.shape[-2]]
            self.seen_tokens = self.keys.shape[-2]

    def reset(self) -> None:
        super().reset()
        self.positions, self.seen_tokens = None, 0

    def stored_bytes(self) -> int:
        if not self.is_initialized:
            return 0
        return _tensor_bytes(self.keys, self.values, self.positions)


class SinkCache(Cache):
    """StreamingLLM's KV cache: the first ``sink`` tokens (the attention sinks) and the most
    recent ``window`` tokens, so at most ``sink + window`` tokens are stored whatever the length.

    Positions are StreamingLLM's faithful variant — by index within the cache, not in the text:
    with ``n`` tokens stored, the next token takes position ``n`` (``get_seq_length()`` returns
    the stored count, and transformers derives positions and the causal mask from it), and every
    cached key is presented to attention rotated to its index, i.e. re-rotated by minus the
    number of tokens evicted since it was cached. Rather than rotating the stored keys in place at
    every eviction (the old transformers ``SinkCache``; in 16-bit that compounds rounding at every
    step), each layer keeps the position each key was rotated at and applies one float32 rotation
    by the difference when attending — exact to one rounding, and a no-op (bit-identical to a
    ``DynamicCache``) until something is evicted. RoPE frequencies come from ``config``
    (``rope_parameters``), computed as the model's rotary embedding computes them; RoPE types
    whose frequencies depend on the length (dynamic, longrope) are refused.

    A chunk of ``c`` tokens attends to the stored tokens plus itself (up to ``sink + window + c``),
    then the cache evicts back to ``sink + window``. ``seen_tokens`` counts every token fed. As
    positions restart within the cache, drive it with the model's forward (a decode loop,
    :func:`chunked_perplexity`), not ``generate()``, which reads ``get_seq_length()`` as the
    number of tokens already processed."""

    def __init__(self, config: Any, sink: int = 4, window: int = 252):
        if not isinstance(sink, int) or sink < 0:
            raise ValueError(f"sink={sink!r}; the attention-sink count is an integer ≥ 0 (StreamingLLM uses 4)")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window={window!r}; the recent window is an integer ≥ 1 token")
        n = _attention_layer_count(config, "SinkCache")
        self.sink, self.window = sink, window
        inv_freq = _rope_inv_freq(config)
        super().__init__(layers=[SinkLayer(sink, window, inv_freq) for _ in range(n)])

    @property
    def seen_tokens(self) -> int:
        return self.layers[0].seen_tokens if self.layers else 0

    @property
    def is_croppable(self) -> bool:
        return all(layer.seen_tokens <= layer.get_seq_length() for layer in self.layers)

    def stored_bytes(self) -> int:
        """Bytes held: keys and values in the model's dtype, plus one int64 position a token a layer."""
        return sum(layer.stored_bytes() for layer in self.layers)


# ---------------------------------------------------------------- measurement


def cache_bytes(cache: Cache) -> int:
    """Stored bytes of any cache: its own ``stored_bytes()`` where it has one, else the keys
    and values tensors its layers hold (a ``DynamicCache``)."""
    if hasattr(cache, "stored_bytes"):
        return int(cache.stored_bytes())
    return sum(_tensor_bytes(getattr(layer, "keys", None), getattr(layer, "values", None))
               for layer in cache.layers if getattr(layer, "is_initialized", False))


def _check_windows(windows: torch.Tensor, chunk: int, batch_size: int) -> None:
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype not in (torch.int64, torch.int32):
        raise ValueError("windows must be an integer tensor of token ids shaped (W, T), e.g. measure._lm_windows(ev)")
    if windows.shape[1] < 2:
        raise ValueError(f"windows have {windows.shape[1]} tokens; perplexity needs T ≥ 2")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r}; feed at least one token per forward (chunk ≥ 1)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; process at least one window at a time (batch_size ≥ 1)")


@torch.inference_mode()
def cache_stats(model: torch.nn.Module, windows: torch.Tensor, cache_factory: Callable[[], Cache] | None = None,
                chunk: int = 32, batch_size: int = 4) -> dict[str, float]:
    """Feed each window (W, T) in chunks of ``chunk`` tokens through a fresh cache from
    ``cache_factory`` (a plain ``DynamicCache`` when None), ``batch_size`` windows at a time,
    every chunk attending to the cached past and itself. Returns ``perplexity`` (exp of the mean
    next-token NLL over all T−1 predictions of every window), ``peak_cache_bytes`` (most bytes
    the cache stored after any chunk, for ``batch_size`` windows; the transient states of the
    chunk being attended are not counted) and ``peak_cache_bytes_per_sequence``."""
    _check_windows(windows, chunk, batch_size)
    factory = cache_factory or (lambda: DynamicCache(config=model.config))
    device = next(model.parameters()).device
    windows = windows.to(device)
    nll, count, peak, peak_seq = 0.0, 0, 0, 0.0
    for rows in windows.split(batch_size):
        cache = factory()
        prev_last: torch.Tensor | None = None  # last logits of the previous chunk: predict this chunk's first token
        for start in range(0, rows.shape[1], chunk):
            ids = rows[:, start : start + chunk]
            logits = model(input_ids=ids, cache=cache, use_cache=True).logits.float()
            if prev_last is not None:
                logits = torch.cat([prev_last, logits], dim=1)
                targets = ids
            else:
                targets = ids[:, 1:]
            lp = torch.log_softmax(logits[:, : targets.shape[1]], dim=-1)
            nll -= float(lp.gather(-1, targets[..., None]).sum())
            count += targets.numel()
            prev_last = logits[:, -1:]
            b = cache_bytes(cache)
            peak, peak_seq = max(peak, b), max(peak_seq, b / rows.shape[0])
    return {"perplexity": M.perplexity_from_nll(nll, count), "peak_cache_bytes": float(peak),
            "peak_cache_bytes_per_sequence": float(peak_seq)}


def chunked_perplexity(model: torch.nn.Module, windows: torch.Tensor, cache_factory: Callable[[], Cache] | None = None,
                       chunk: int = 32, batch_size: int = 4) -> float:
    """Perplexity over ``windows`` (W, T) with each window fed ``chunk`` tokens at a time through
    a cache from ``cache_factory`` (plain ``DynamicCache`` when None): see :func:`cache_stats`."""
    return cache_stats(model, windows, cache_factory, chunk, batch_size)["perplexity"]


@torch.inference_mode()
def greedy_with_cache(model: torch.nn.Module, prompt: torch.Tensor, n: int, cache: Cache,
                      forced: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill ``prompt`` (B, T) into ``cache`` then decode ``n`` tokens one at a time. Returns the
    greedy tokens (B, n) and the logits each came from (B, n, V). With ``forced`` (B, n) those
    tokens are fed instead of the argmax (teacher forcing), so two caches' logits can be compared
    step for step even where their greedy choices part."""
    if n < 1:
        raise ValueError(f"n={n}; decode at least one token")
    out = model(input_ids=prompt, cache=cache, use_cache=True)
    logits, tokens = [], []
    for i in range(n):
        step = out.logits[:, -1].float()
        logits.append(step)
        tokens.append(step.argmax(-1))
        if i == n - 1:
            break
        nxt = forced[:, i] if forced is not None else tokens[-1]
        out = model(input_ids=nxt[:, None], cache=cache, use_cache=True)
    return torch.stack(tokens, dim=1), torch.stack(logits, dim=1)


def cache_factory(model: torch.nn.Module, setting: dict[str, Any]) -> Callable[[], Cache]:
    """Fresh caches of the kind a ``kv_cache`` runtime setting names (kv_cache_quantization,
    attention_sinks), for the model's config."""
    if setting["kind"] == "quantized":
        return lambda: QuantizedKVCache(model.config, bits=setting["bits"], residual=setting.get("residual", 0))
    if setting["kind"] == "sinks":
        return lambda: SinkCache(model.config, sink=setting["sink"], window=setting["window"])
    raise ValueError(f"kv_cache kind={setting['kind']!r} is not known; expected quantized or sinks")
