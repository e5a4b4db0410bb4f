"""The catalog's ``typical_wins`` (the taxonomy's evidence tables and papers) as structured claims
where the text states a figure: "2–4× mem ↓" is memory cut by a factor of 2 to 4, "Latency ↓
20–50%" a 1.25–2× speed-up, "8 → 2 bytes" a 4× cut — with the hardware a claim is for when the
text (or the entry's hardware needs) says so. Pure text: db/evidence.py sets these beside what
Speedbook measured."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Quantity = Literal["memory", "kv_memory", "train_memory", "optimizer_memory", "trainable_params", "params",
                   "speed", "wall_clock", "compute", "capacity"]
Bound = Literal["range", "about", "up_to", "at_least"]
Hardware = Literal["gpu", "cpu", "sparse"]

# the first of these in the words after a figure names what it counts ("2–4× mem ↓"); failing that,
# the last one before it ("KV mem ↓ up to 8×")
QUANTITY_WORDS: tuple[tuple[Quantity, re.Pattern[str]], ...] = tuple((q, re.compile(p, re.I)) for q, p in (
    ("capacity", r"larger (?:batch|models)|batch/context|longer sequences"),
    ("kv_memory", r"\bkv\b[\w\s-]*?\bmem(?:ory)?\b|\bkv[- ]cache"),
    ("train_memory", r"\btrain(?:ing)? mem(?:ory)?\b"),
    ("optimizer_memory", r"optimizer state"),
    ("trainable_params", r"trainable param"),
    ("params", r"\bparams?\b|\bparameters?\b"),
    ("wall_clock", r"wall-clock|training time"),
    ("speed", r"speed|faster|tok/s|throughput|latency|\bgemm\b|inference time"),
    ("compute", r"\bflops?\b|\bcompute\b|multiplies"),
    ("memory", r"\bmem\b|memory|smaller|stored bits|\bweights?\b|compression"),
))
REDUCE = re.compile(r"↓|÷|smaller|fewer|\bless\b|saved|shorter|cheaper|reduc|\blower\b", re.I)
INCREASE = re.compile(r"↑|faster|\bmore\b|higher|larger|longer|speedup|extra", re.I)
REFERENCE = re.compile(r"\b(?:vs\.?|than|over)\s+(bf16|fp16|16-bit|fp32|32-bit)\b", re.I)
GPU_WORDS = re.compile(r"\bGPUs?\b|\bH100\b|\bA100\b|Hopper|Blackwell|\bCUDA\b|TensorRT|tensor cores|\bTPUs?\b")
CPU_WORDS = re.compile(r"\bCPUs?\b|\bAVX|\bAMX\b|\bmobile\b|\bphone\b|\bARM\b", re.I)
SPARSE_WORDS = re.compile(r"sparse-aware", re.I)
SOURCE = re.compile(r"\(([^()]*(?:evidence tables?|paper)[^()]*)\)", re.I)

_NUM = r"\d[\d,]*(?:\.\d+)?"
FIGURE = re.compile(
    rf"(?P<a>{_NUM})\s*→\s*(?P<approx>~)?(?P<b>{_NUM})\s*bytes?\b"  # "8 → 2 bytes per parameter"
    rf"|(?P<low>{_NUM})(?:\s*[–-]\s*(?P<high>{_NUM}))?\s*(?P<unit>×|%)(?!\s*\d)"  # "2–4×", "20 %", not "3×3"
)
PREFIX = re.compile(r"(?:(?P<up>up to\s*~?|≤|<)|(?P<least>>|at least)|(?P<about>~|≈))\s*$", re.I)
TOLERANCE = 1.1  # a single figure ("~2×", "2× smaller") reads as ±10 %: the taxonomy rounds its figures
_STOPS = (",", " and ", " at ", " with ", "(", ")")  # where the words about one figure end


@dataclass(frozen=True)
class Claim:
    """One stated figure, e.g. "2–4× mem ↓" → memory, low 2, high 4, ×, reduction."""

    text: str  # the figure as written, e.g. "2–4× mem ↓"
    quantity: Quantity
    low: float
    high: float
    unit: Literal["×", "%"]
    direction: Literal["reduction", "increase"]
    bound: Bound = "range"
    reference: Literal["16-bit", "fp32"] | None = None  # what memory is compared with, when the text says
    hardware: Hardware | None = None  # what the claim is for (None: any)
    hardware_text: str = ""  # the words that said so, e.g. "H100"
    source: str = ""  # e.g. "evidence table I"

    def factor(self, value: float) -> float:
        """A figure of this claim as an improvement factor (above 1 is better): 2× → 2, 50 % ↓ → 2, 60 % faster → 1.6."""
        if self.unit == "×":
            return value
        if self.direction == "reduction":
            return math.inf if value >= 100 else 1.0 / (1.0 - value / 100.0)
        return 1.0 + value / 100.0

    def factor_range(self) -> tuple[float, float]:
        """The claimed improvement factors [low, high]: "up to 8×" is [1, 8], ">50 %" [2, ∞), a single figure ±10 %."""
        lo, hi = self.factor(self.low), self.factor(self.high)
        if self.bound == "up_to":
            return 1.0, hi
        if self.bound == "at_least":
            return lo, (hi if self.high != self.low else math.inf)
        if self.low == self.high:
            return lo / TOLERANCE, lo * TOLERANCE
        return lo, hi


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _segments(text: str) -> list[str]:
    """Split on top-level ";" (a parenthesis may hold one: "(paper; evidence table I: 4–7×)")."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ";" and depth <= 0:
            out.append(text[start:i])
            start = i + 1
    return [s.strip() for s in [*out, text[start:]] if s.strip()]


def _first_quantity(window: str) -> tuple[Quantity, int] | None:
    hits = [(m.start(), q) for q, p in QUANTITY_WORDS if (m := p.search(window))]
    return (min(hits)[1], min(hits)[0]) if hits else None


def _last_quantity(window: str) -> tuple[Quantity, int] | None:
    hits = [(m.end(), -m.start(), q, m.start()) for q, p in QUANTITY_WORDS for m in p.finditer(window)]
    return (max(hits)[2], max(hits)[3]) if hits else None


def _after_end(seg: str, start: int, limit: int) -> int:
    ends = [i for stop in _STOPS if (i := seg.find(stop, start, limit)) >= 0]
    return min(ends, default=limit)


def _before_start(seg: str, end: int, floor: int) -> int:
    starts = [i + len(stop) for stop in (",", " and ", " at ", "(") if (i := seg.rfind(stop, floor, end)) >= 0]
    return max([floor, *starts])


def _direction(after: str, before: str) -> Literal["reduction", "increase"] | None:
    """The words after the figure say first ("50% mem ↓"), then those before ("Latency ↓ 20–50%")."""
    for window in (after, before):
        if REDUCE.search(window):
            return "reduction"
        if INCREASE.search(window):
            return "increase"
    return None


def _hardware(segment: str, text: str, devices: tuple[str, ...]) -> tuple[Hardware | None, str]:
    """What the segment says it is for; failing that the whole text; failing that the entry's devices."""
    for words in (segment, text):
        if m := SPARSE_WORDS.search(words):
            return "sparse", m.group(0)
        gpu, cpu = GPU_WORDS.search(words), CPU_WORDS.search(words)
        if gpu and cpu:
            return None, ""
        if gpu or cpu:
            return ("gpu", gpu.group(0)) if gpu else ("cpu", cpu.group(0))
    if tuple(devices) == ("cuda",):
        return "gpu", "the catalog's hardware needs"
    if tuple(devices) == ("cpu",):
        return "cpu", "the catalog's hardware needs"
    return None, ""


def _quantity(m: re.Match[str], before: str, after: str) -> tuple[Quantity, int] | None:
    """What the figure counts and where its words start: "8 → 2 bytes" names it before the figure
    ("Optimizer state 8 → 2 bytes"), the others after ("2–4× mem ↓") and failing that before ("KV mem ↓ up to 8×")."""
    first = _last_quantity(before) if m.group("a") else _first_quantity(after)
    if first is not None:
        return first[0], (m.start() - len(before) + first[1] if m.group("a") else m.start())
    last = _last_quantity(before)
    return None if last is None else (last[0], m.start() - len(before) + last[1])


def _figure(m: re.Match[str], seg: str, floor: int, direction: str | None) -> tuple[float, float, str, Bound, int] | None:
    """(low, high, unit, bound, where a prefix such as "up to" starts) of one figure; None for a
    percentage that says no direction ("BERT at 3% weights" is no win)."""
    if m.group("a"):  # "8 → 2 bytes": a cut by a / b
        cut = _number(m.group("a")) / _number(m.group("b"))
        return cut, cut, "×", "about" if m.group("approx") else "range", m.start()
    if m.group("unit") == "%" and direction is None:
        return None
    low = _number(m.group("low"))
    high = _number(m.group("high")) if m.group("high") else low
    p = PREFIX.search(seg, max(floor, m.start() - 12), m.start())
    bound: Bound = ("up_to" if p and p.group("up") else "at_least" if p and p.group("least")
                    else "about" if p and p.group("about") else "range")
    return low, high, m.group("unit"), bound, p.start() if p else m.start()


def _segment_claims(seg: str, text: str, devices: tuple[str, ...]) -> list[Claim]:
    matches = list(FIGURE.finditer(seg))
    source = (m.group(1).strip() if (m := SOURCE.search(seg)) else "")
    hardware, hardware_text = _hardware(seg, text, devices)
    claims: list[Claim] = []
    for k, m in enumerate(matches):
        limit = matches[k + 1].start() if k + 1 < len(matches) else len(seg)
        after = seg[m.end():_after_end(seg, m.end(), limit)]
        floor = matches[k - 1].end() if k else 0
        before = seg[_before_start(seg, m.start(), floor):m.start()]
        found = _quantity(m, before, after)
        in_parens = seg.rfind("(", 0, m.start()) > seg.rfind(")", 0, m.start())
        if found is None and in_parens and claims:  # "8 → 2 bytes per parameter (75% ↓)" restates the one before
            found = (claims[-1].quantity, m.start())
        direction = "reduction" if m.group("a") else _direction(after, before)
        figure = None if found is None else _figure(m, seg, floor, direction)
        if figure is None:
            continue
        quantity, start = found
        low, high, unit, bound, prefix_start = figure
        ref = REFERENCE.search(after + " " + before)
        claims.append(Claim(
            text=seg[min(start, prefix_start):m.end() + len(after)].strip(" ("), quantity=quantity, low=low, high=high,
            unit=unit, direction=direction or ("increase" if quantity == "speed" else "reduction"), bound=bound,
            reference=None if ref is None else ("fp32" if ref.group(1).lower() in ("fp32", "32-bit") else "16-bit"),
            hardware=hardware, hardware_text=hardware_text, source=source))
    return claims


def parse_claims(text: str, devices: tuple[str, ...] = ("cpu", "cuda")) -> list[Claim]:
    """Every figure ``text`` states, in order, without repeats (the same quantity and range twice)."""
    out: list[Claim] = []
    for seg in _segments(text):
        for c in _segment_claims(seg, text, tuple(devices)):
            if not any(o.quantity == c.quantity and o.factor_range() == c.factor_range() for o in out):
                out.append(c)
    return out


@lru_cache(maxsize=None)
def claims_for(entry_id: str) -> tuple[Claim, ...]:
    """The claims of a catalog entry's typical wins, its hardware needs as the fallback context."""
    from playbooks.catalog import get_entry

    entry = get_entry(entry_id)
    return tuple(parse_claims(entry.typical_wins, tuple(entry.hardware.devices)))
