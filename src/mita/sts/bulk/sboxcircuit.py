"""A compiler from a key-selected pair of 4-bit S-boxes to a short AND/XOR/NOT program.

The bitsliced STA (:mod:`.sta`) evaluates the key-selected nibble substitution as a Boolean circuit
on whole bit-planes, so it needs the circuit, not the tables. This module derives that circuit from
the tables (ANF, shared terms, scheduling, register allocation) and proves it against them; it knows
nothing of NumPy or of STA's rounds.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

_AND, _XOR, _NOT, _COPY = 0, 1, 2, 3
#: (opcode, destination register, operand register, operand register)
Instr: TypeAlias = tuple[int, int, int, int]
_INPUTS = 5  # registers 0..3: nibble bits x0..x3; register 4: the key selector bit
_OUTPUTS = 4  # registers 5..8: substituted bits y0..y3; temporaries follow


@dataclass(frozen=True, slots=True)
class SboxCircuit:
    """A straight-line AND/XOR/NOT program computing y = (when_set if s else when_clear)[x].

    Derived at import from the algebraic normal form (ANF) of each output bit as a function of
    the five inputs, with shared monomials and greedily shared XOR pairs (Paar's heuristic).
    Deriving it from the tables, instead of pasting a hand-made circuit, keeps the tables the
    one source of truth (the sample-table STA gets its own circuit for free), and
    :func:`_check_circuit` proves each circuit against its tables at import.
    """

    program: tuple[Instr, ...]
    temps: int


def _anf(truth: Sequence[int]) -> set[int]:
    """Monomials (as variable bit-masks) of a Boolean function given by its truth table (Möbius transform)."""
    a = list(truth)
    n = len(a).bit_length() - 1
    for i in range(n):
        for m in range(len(a)):
            if m >> i & 1:
                a[m] ^= a[m ^ (1 << i)]
    return {m for m in range(len(a)) if a[m]}


def _compile_sbox(when_set: Sequence[int], when_clear: Sequence[int]) -> SboxCircuit:
    ssa: list[tuple[int, int, int]] = []  # node i + _INPUTS = (op, a, b); nodes 0..4 are the inputs

    def emit(op: int, a: int, b: int) -> int:
        ssa.append((op, a, b))
        return _INPUTS + len(ssa) - 1

    node_of: dict[int, int] = {1 << v: v for v in range(_INPUTS)}

    def monomial(m: int) -> int:
        if m in node_of:
            return node_of[m]
        have = sorted(node_of)
        for a, c in itertools.product(have, have):
            if a | c == m and a != m and c != m:
                node_of[m] = emit(_AND, node_of[a], node_of[c])
                return node_of[m]
        top = m.bit_length() - 1
        node_of[m] = emit(_AND, monomial(m & ~(1 << top)), top)
        return node_of[m]

    anfs = []
    for j in range(4):
        truth = [((when_set if m >> 4 else when_clear)[m & 15] >> j) & 1 for m in range(32)]
        anfs.append(_anf(truth))
    for m in sorted(set().union(*anfs) - {0}, key=lambda m: (m.bit_count(), m)):
        monomial(m)
    sums = [{node_of[m] for m in f if m} for f in anfs]
    # Share the XOR of the pair of terms that occurs in most outputs, while some pair repeats.
    while True:
        counts: Counter[tuple[int, int]] = Counter()
        for s in sums:
            counts.update(itertools.combinations(sorted(s), 2))
        best = max(counts.items(), key=lambda kv: (kv[1], [-v for v in kv[0]]), default=None)
        if best is None or best[1] < 2:
            break
        (u, v), _ = best
        w = emit(_XOR, u, v)
        for s in sums:
            if u in s and v in s:
                s -= {u, v}
                s.add(w)
    finals = []
    for s, f in zip(sums, anfs, strict=True):
        terms = sorted(s)
        acc = terms[0]
        for t in terms[1:]:
            acc = emit(_XOR, acc, t)
        if 0 in f:  # the constant monomial: complement
            acc = emit(_NOT, acc, acc)
        finals.append(acc)
    return _allocate(*_schedule(ssa, finals))


def _schedule(ssa: list[tuple[int, int, int]], finals: list[int]) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Reorder the SSA program to keep few values alive (greedy list scheduling).

    Among the instructions whose operands are ready, take the one that ends the life of the
    most temporaries (ties: the earliest). Fewer live values mean fewer plane buffers, and
    those buffers then fit in the CPU's L2 cache.
    """
    uses: Counter[int] = Counter()
    for _, a, b in ssa:
        uses.update({a, b})
    done: set[int] = set(range(_INPUTS))
    renumber: dict[int, int] = {v: v for v in range(_INPUTS)}
    order: list[tuple[int, int, int]] = []
    pending = set(range(len(ssa)))
    while pending:
        best, best_score = -1, -1
        for i in sorted(pending):
            op, a, b = ssa[i]
            if a not in done or b not in done:
                continue
            score = sum(1 for v in {a, b} if v >= _INPUTS and uses[v] == 1)
            if score > best_score:
                best, best_score = i, score
        op, a, b = ssa[best]
        for v in {a, b}:
            uses[v] -= 1
        pending.remove(best)
        done.add(_INPUTS + best)
        renumber[_INPUTS + best] = _INPUTS + len(order)
        order.append((op, renumber[a], renumber[b]))
    return order, [renumber[f] for f in finals]


def _allocate(ssa: list[tuple[int, int, int]], finals: list[int]) -> SboxCircuit:
    """Map SSA nodes to few registers (linear scan), so the circuit's planes stay in cache."""
    end = len(ssa)
    last_use: dict[int, int] = {}
    for i, (_, a, b) in enumerate(ssa):
        last_use[a] = last_use[b] = i
    for f in finals:
        last_use[f] = end
    out_reg: dict[int, int] = {}
    for j, f in enumerate(finals):
        if f >= _INPUTS and finals.count(f) == 1:
            out_reg[f] = _INPUTS + j
    reg: dict[int, int] = {v: v for v in range(_INPUTS)}
    free: list[int] = []
    temps = 0
    program: list[Instr] = []
    for i, (op, a, b) in enumerate(ssa):
        node = _INPUTS + i
        ra, rb = reg[a], reg[b]
        for operand in {a, b}:
            r = reg[operand]
            if last_use[operand] == i and r >= _INPUTS + _OUTPUTS:
                free.append(r)
        if node in out_reg:
            r = out_reg[node]
        elif free:
            free.sort()
            r = free.pop(0)
        else:
            r = _INPUTS + _OUTPUTS + temps
            temps += 1
        reg[node] = r
        program.append((op, r, ra, rb))
    for j, f in enumerate(finals):
        if out_reg.get(f) != _INPUTS + j:
            program.append((_COPY, _INPUTS + j, reg[f], reg[f]))
    return SboxCircuit(tuple(program), temps)


def _check_circuit(circuit: SboxCircuit, when_set: Sequence[int], when_clear: Sequence[int]) -> None:
    """Run the circuit on 32-bit truth tables (one bit per input combination) and compare."""
    full = (1 << 32) - 1
    regs = [sum(1 << m for m in range(32) if m >> v & 1) for v in range(_INPUTS)]
    regs += [0] * (_OUTPUTS + circuit.temps)
    for op, d, a, b in circuit.program:
        if op == _AND:
            regs[d] = regs[a] & regs[b]
        elif op == _XOR:
            regs[d] = regs[a] ^ regs[b]
        elif op == _NOT:
            regs[d] = ~regs[a] & full
        else:
            regs[d] = regs[a]
    for m in range(32):
        y = sum((regs[_INPUTS + j] >> m & 1) << j for j in range(4))
        if y != (when_set if m >> 4 else when_clear)[m & 15]:
            raise AssertionError("bitsliced S-box circuit does not match its tables")
