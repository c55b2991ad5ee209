"""Compile a RASP program to the weights of our `Transformer` (attention layers with MLPs, no norms, learned
positions, bidirectional mask), the way tracr does, from its paper's description:

- **Residual layout.** A constant `one`, a `bos` flag, then a subspace per SOp: a one-hot block over its value set
  (categorical) or one dimension (numerical). The token embedding writes `one` and the token's one-hot (BOS
  writes `bos`), the position embedding the index's one-hot (index 0 is the first token after BOS).
- **Schedule.** Each op goes to the earliest sublayer its inputs allow: Aggregate to an attention sublayer,
  Map and SequenceMap to an MLP, SelectorWidth to an attention sublayer and the MLP after it. Ops on the same
  sublayer sit side by side (one head each, or a slice of the MLP).
- **Attention.** score(i, j) = λ·[predicate(key_j, query_i)], plus λ/2 on BOS (λ for SelectorWidth): a query
  that selects nothing rests on BOS, whose values are zero; λ = `softness` makes softmax hard.
- **MLPs.** Categorical maps are lookup tables (one hidden unit per input value, or per input pair); numerical
  inputs go through a discretising MLP (two ReLUs per gap between consecutive input values make a step). Every
  hidden unit is switched off at BOS, so no op writes there and BOS stays a clean attention sink.

The compiled model records the program's dataflow as circuit-graph edges (`true_edges`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import torch
from torch import Tensor

from workbench.compile.rasp import (
    Aggregate,
    Indices,
    Map,
    RASPError,
    Selector,
    SelectorWidth,
    SequenceMap,
    SOp,
    Tokens,
    evaluate,
    reads,
    walk,
)
from workbench.models import ModelConfig, Transformer, build_model

SOFTNESS = 100.0  # λ: the score gap between a selected key and the rest


def _sorted(values) -> list:
    try:
        return sorted(set(values))
    except TypeError:
        return sorted(set(values), key=repr)


def value_sets(program: SOp, vocab: list, max_len: int) -> dict[int, list | None]:
    """Each SOp's possible values over inputs of length ≤ max_len (None: not finite or not known; only an
    output or a value nothing decodes may have that)."""
    sets: dict[int, list | None] = {}
    for node in walk(program):
        if isinstance(node, Selector):
            continue
        if isinstance(node, Tokens):
            sets[id(node)] = _sorted(vocab)
        elif isinstance(node, Indices):
            sets[id(node)] = list(range(max_len))
        elif isinstance(node, SelectorWidth):
            sets[id(node)] = list(range(max_len + 1))
        elif isinstance(node, Map):
            sets[id(node)] = _sorted(_apply(node, v) for v in _known(sets, node.sop))
        elif isinstance(node, SequenceMap):
            sets[id(node)] = _sorted(_apply(node, a, b) for a in _known(sets, node.a) for b in _known(sets, node.b))
        elif isinstance(node, Aggregate):
            inner = sets[id(node.sop)]
            if node.encoding == "categorical":
                sets[id(node)] = inner
            elif inner is not None and set(inner) <= {0, 1}:  # means of 0/1 values: fractions j/k
                sets[id(node)] = _sorted(float(Fraction(j, k)) for k in range(1, max_len + 1) for j in range(k + 1))
            else:
                sets[id(node)] = None
    return sets


def _known(sets: dict, sop: SOp) -> list:
    if sets[id(sop)] is None:
        raise RASPError(f"{sop.label}: a numerical mean of non-0/1 values has no finite value set the compiler "
                        "can enumerate, so nothing may read it through an MLP")
    return sets[id(sop)]


def _apply(node, *args):
    try:
        return node.f(*args)
    except Exception as e:
        raise RASPError(f"{node.label}: its function failed on {args!r} ({type(e).__name__}: {e})") from None


@dataclass
class Layout:
    """Where each SOp lives in the residual stream."""

    dims: dict[str, slice] = field(default_factory=dict)
    width: int = 0

    def add(self, name: str, size: int) -> slice:
        self.dims[name] = slice(self.width, self.width + size)
        self.width += size
        return self.dims[name]


@dataclass
class Compiled:
    """A compiled program: the model, how to feed and read it, and its true circuit."""

    program: SOp
    vocab: list
    max_len: int
    model: Transformer
    output_values: list | None  # the categorical output's values, in logit order (None: numerical)
    components: dict[str, str]  # SOp label → the node that writes it ("L0H1", "MLP2", "input")
    heads: dict[str, str] = field(default_factory=dict)  # attention op label → its head (SelectorWidth's too)
    true_edges: list[dict] = field(default_factory=list)  # writer, reader, sop

    @property
    def bos(self) -> int:
        return len(self.vocab)

    def encode(self, inputs: list[list]) -> Tensor:
        """Token ids `[batch 1+len]` with BOS first; every input must have the same length."""
        lengths = {len(x) for x in inputs}
        if len(lengths) != 1:
            raise RASPError(f"encode: inputs of lengths {sorted(lengths)}; batch one length at a time")
        ids = {t: i for i, t in enumerate(self.vocab)}
        bad = [t for x in inputs for t in x if t not in ids]
        if bad:
            raise RASPError(f"encode: token {bad[0]!r} is not in the vocabulary {self.vocab}")
        if lengths.pop() > self.max_len:
            raise RASPError(f"encode: inputs longer than max_len={self.max_len}")
        return torch.tensor([[self.bos] + [ids[t] for t in x] for x in inputs])

    @torch.no_grad()
    def run(self, inputs: list[list], undefined_below: float | None = 0.5) -> list[list]:
        """The model's outputs, decoded (the first token after BOS onwards). A categorical output whose largest
        logit is below `undefined_below` is None (nothing written: an Aggregate that selected nothing); None
        decodes every position by argmax (a trained model's logits are not one-hots)."""
        out = self.model(self.encode(inputs).to(next(self.model.parameters()).device))[:, 1:].cpu()
        if self.output_values is None:
            return out[..., 0].tolist()
        best, which = out.max(-1)
        floor = -math.inf if undefined_below is None else undefined_below
        return [[self.output_values[i] if b > floor else None for b, i in zip(bs, row, strict=True)]
                for bs, row in zip(best.tolist(), which.tolist(), strict=True)]


def output_metric(compiled: Compiled, clean: list[list], corrupted: list[list]):
    """The natural metric for discovery on (clean, corrupted) inputs: for a categorical output, the logit of the
    clean run's true output minus the mean logit, averaged over positions (a margin that does not saturate); for
    a numerical one, the output moved towards the clean value, Σ out·sign(clean − corrupted) / n."""
    truth = [evaluate(compiled.program, x) for x in clean]
    if compiled.output_values is None:
        other = [evaluate(compiled.program, x) for x in corrupted]
        sign = torch.tensor(truth, dtype=torch.float).sub(torch.tensor(other, dtype=torch.float)).sign()
        return lambda logits: (logits[:, 1:, 0] * sign.to(logits.device)).mean()
    ids = torch.tensor([[compiled.output_values.index(v) for v in row] for row in truth])

    def margin(logits):
        chosen = logits[:, 1:]
        return (chosen.gather(-1, ids.to(logits.device)[..., None])[..., 0] - chosen.mean(-1)).mean()
    return margin


def compile_program(program: SOp, vocab: list, max_len: int, softness: float = SOFTNESS) -> Compiled:
    """Compile `program` for inputs over `vocab` of length 1 … max_len; refuses ill-typed programs (RASPError)."""
    if not isinstance(program, SOp) or isinstance(program, Selector):
        raise RASPError(f"compile: the program must be an SOp (the output sequence), got {type(program).__name__}")
    if isinstance(program, Tokens | Indices):
        raise RASPError("compile: the program is the input itself; there is nothing to compile")
    if not vocab or len(set(vocab)) != len(list(vocab)):
        raise RASPError(f"compile: vocab {vocab} must be non-empty with distinct tokens")
    vocab = _sorted(vocab)  # token ids follow the tokens' one-hot order
    if max_len < 1:
        raise RASPError(f"compile: max_len={max_len} must be ≥ 1")
    sets = value_sets(program, vocab, max_len)
    nodes = [n for n in walk(program) if not isinstance(n, Selector)]
    for node in nodes:
        if node.encoding == "categorical" and sets[id(node)] is None:
            raise RASPError(f"{node.label}: categorical, but its value set is not finite")
    if program.encoding == "categorical" and not sets[id(program)]:
        raise RASPError(f"compile: the output {program.label} has no values")

    # --- schedule: sublayer 2l is layer l's attention, 2l+1 its MLP ---
    done: dict[int, int] = {}  # node → the sublayer after which its value is in the residual stream
    place: dict[int, int] = {}  # node → its (first) sublayer
    for node in nodes:
        if isinstance(node, Tokens | Indices):
            done[id(node)] = -1
            continue
        ready = max(done[id(d)] for d in _inputs(node)) + 1
        if isinstance(node, Aggregate | SelectorWidth):
            place[id(node)] = ready + (ready % 2)  # the next attention sublayer
            done[id(node)] = place[id(node)] + (1 if isinstance(node, SelectorWidth) else 0)
        else:
            place[id(node)] = ready + (1 - ready % 2)  # the next MLP sublayer
            done[id(node)] = place[id(node)]
    n_layers = max(done.values()) // 2 + 1

    # --- residual layout ---
    layout = Layout()
    one, bos = layout.add("one", 1).start, layout.add("bos", 1).start
    for node in nodes:
        layout.add(node.label, 1 if node.encoding == "numerical" else len(sets[id(node)]))
        if isinstance(node, SelectorWidth):
            layout.add(node.label + ".bos_weight", 1)
    if len(set(n.label for n in nodes)) != len(nodes):
        raise RASPError("compile: two operations share a label; give each a distinct .named(…)")

    heads: dict[int, list] = {}
    mlps: dict[int, list] = {}
    for node in nodes:
        if id(node) not in place:
            continue
        layer = place[id(node)] // 2
        if isinstance(node, Aggregate | SelectorWidth):
            heads.setdefault(layer, []).append(node)
        if isinstance(node, Map | SequenceMap | SelectorWidth):
            mlps.setdefault(layer, []).append(node)
    n_heads = max([len(v) for v in heads.values()] + [1])
    d_head = max([_qk_width(h, sets) for hs in heads.values() for h in hs] + [1])
    widths = [sum(_mlp_width(n, sets, max_len) for n in mlps.get(layer, [])) for layer in range(n_layers)]
    out_values = sets[id(program)] if program.encoding == "categorical" else None
    cfg = ModelConfig(n_layers=n_layers, d_model=layout.width, n_heads=n_heads, d_head=d_head, d_mlp=widths,
                      act="relu", norm="none", positional="learned", mask="bidirectional", n_ctx=max_len + 1,
                      d_vocab=len(vocab) + 1, d_output=len(out_values) if out_values else 1)
    model = build_model(cfg, seed=0)
    compiled = Compiled(program, vocab, max_len, model, out_values, {"tokens": "input", "indices": "input"})
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        W = Writer(model, layout, sets, one, bos, softness, max_len)
        W.embeddings(vocab)
        for layer, hs in heads.items():
            for h, node in enumerate(hs):
                W.head(layer, h, node)
                compiled.heads[node.label] = compiled.components[node.label] = f"L{layer}H{h}"
        for layer, ms in mlps.items():
            start = 0
            for node in ms:
                start = W.mlp(layer, start, node)
                compiled.components[node.label] = f"MLP{layer}"  # a SelectorWidth's value comes from its MLP
        W.unembed(program)
    model.token_names = [str(t) for t in vocab] + ["BOS"]
    compiled.true_edges = true_edges([n for n in nodes if not isinstance(n, Tokens | Indices)], compiled.components,
                                     compiled.heads, program)
    return compiled


def _inputs(node) -> list[SOp]:
    return [sop for _, sop in reads(node)]


def _qk_width(node, sets) -> int:
    """A head's width: the query's one-hot and the BOS term; the aggregated value's one-hot."""
    value = 1 if isinstance(node, SelectorWidth) or node.encoding == "numerical" else len(sets[id(node.sop)])
    return max(len(sets[id(node.selector.queries)]) + 1, value)


def _mlp_width(node, sets, max_len: int) -> int:
    if isinstance(node, SelectorWidth):
        return 2 * max_len + 1  # steps between 1/(w+1) for w = 0 … max_len, and the constant
    if isinstance(node, SequenceMap):
        return len(sets[id(node.a)]) * len(sets[id(node.b)])
    if node.sop.encoding == "categorical":
        return len(sets[id(node.sop)])
    return 2 * (len(_known(sets, node.sop)) - 1) + 1


class Writer:
    """Writes each op's weights into the zeroed model."""

    def __init__(self, model: Transformer, layout: Layout, sets, one: int, bos: int, softness: float,
                 max_len: int):
        self.model, self.layout, self.sets = model, layout, sets
        self.one, self.bos, self.softness, self.max_len = one, bos, softness, max_len
        self.big = 1e4  # switches a hidden unit off at BOS

    def block(self, sop: SOp) -> slice:
        return self.layout.dims[sop.label]

    def index(self, sop: SOp, value) -> int:
        return self.block(sop).start + self.sets[id(sop)].index(value)

    def embeddings(self, vocab: list) -> None:
        E, P = self.model.embed.weight, self.model.pos_embed.weight
        E[:, self.one] = 1
        E[len(vocab), self.bos] = 1
        if "tokens" in self.layout.dims:  # vocab is sorted, as the tokens' value set is
            E[torch.arange(len(vocab)), torch.arange(len(vocab)) + self.layout.dims["tokens"].start] = 1
        if "indices" in self.layout.dims:  # index 0 is the first token after BOS
            P[torch.arange(1, self.max_len + 1), torch.arange(self.max_len) + self.layout.dims["indices"].start] = 1

    def head(self, layer: int, h: int, node) -> None:
        attn = self.model.blocks[layer].attn
        dh = self.model.cfg.d_head
        qkv = attn.qkv.weight.view(3, self.model.cfg.n_heads, dh, -1)  # [q/k/v head d_head d_model]
        out = attn.out.weight.view(-1, self.model.cfg.n_heads, dh)  # [d_model head d_head]
        sel = node.selector
        scale = self.softness * math.sqrt(dh)
        queries = self.sets[id(sel.queries)]
        for a, q in enumerate(queries):
            qkv[0, h, a, self.index(sel.queries, q)] = scale
            for k in self.sets[id(sel.keys)]:
                if sel.test(k, q):
                    qkv[1, h, a, self.index(sel.keys, k)] = 1
        qkv[0, h, len(queries), self.one] = scale
        qkv[1, h, len(queries), self.bos] = 1.0 if isinstance(node, SelectorWidth) else 0.5
        if isinstance(node, SelectorWidth):  # the weight on BOS, 1/(width + 1)
            qkv[2, h, 0, self.bos] = 1
            out[self.layout.dims[node.label + ".bos_weight"].start, h, 0] = 1
        elif node.encoding == "numerical":
            qkv[2, h, 0, self.block(node.sop).start] = 1
            out[self.block(node).start, h, 0] = 1
        else:
            for c, value in enumerate(self.sets[id(node.sop)]):
                qkv[2, h, c, self.index(node.sop, value)] = 1
                out[self.index(node, value), h, c] = 1

    def mlp(self, layer: int, start: int, node) -> int:
        """Write `node`'s MLP into hidden units start…; returns the next free unit."""
        mlp = self.model.blocks[layer].mlp
        W_in, b_in, W_out = mlp.fc_in.weight, mlp.fc_in.bias, mlp.fc_out.weight  # [hidden d_model] … [d_model hidden]
        unit = start
        if isinstance(node, SequenceMap):
            for x in self.sets[id(node.a)]:
                for y in self.sets[id(node.b)]:
                    W_in[unit, self.index(node.a, x)] = W_in[unit, self.index(node.b, y)] = 1
                    b_in[unit] = -1  # on only when both one-hots are
                    self._write(W_out, unit, node, _apply(node, x, y))
                    unit += 1
            return unit
        if isinstance(node, Map) and node.sop.encoding == "categorical":
            for x in self.sets[id(node.sop)]:
                W_in[unit, self.index(node.sop, x)] = 1
                self._write(W_out, unit, node, _apply(node, x))
                unit += 1
            return unit
        # a discretising MLP over one numerical input x with sorted values v_0 < … < v_m:
        # out = enc(f(v_0)) + Σ_k (enc(f(v_{k+1})) − enc(f(v_k))) · step(x − (v_k + v_{k+1}) / 2)
        if isinstance(node, SelectorWidth):
            source = self.layout.dims[node.label + ".bos_weight"].start
            values = [1 / (w + 1) for w in range(self.max_len, -1, -1)]  # ascending x: width max_len … 0
            result = list(range(self.max_len, -1, -1))
        else:
            source = self.block(node.sop).start
            values = _known(self.sets, node.sop)
            result = [_apply(node, v) for v in values]
        gap = min((b - a for a, b in zip(values, values[1:], strict=False)), default=1.0)
        slope = 4.0 / gap
        W_in[unit, self.one], W_in[unit, self.bos] = 1, -self.big  # the constant term, off at BOS
        self._write(W_out, unit, node, result[0])
        unit += 1
        for k in range(len(values) - 1):
            threshold = (values[k] + values[k + 1]) / 2
            for offset, sign in ((0.5, 1), (-0.5, -1)):  # step = relu(s(x−t) + ½) − relu(s(x−t) − ½)
                W_in[unit, source], W_in[unit, self.bos] = slope, -self.big
                b_in[unit] = -slope * threshold + offset
                self._write(W_out, unit, node, result[k + 1], sign)
                self._write(W_out, unit, node, result[k], -sign)
                unit += 1
        return unit

    def _write(self, W_out: Tensor, unit: int, node, value, sign: float = 1.0) -> None:
        if node.encoding == "numerical":
            W_out[self.block(node).start, unit] += sign * value
        elif value is not None:
            W_out[self.index(node, value), unit] += sign

    def unembed(self, program: SOp) -> None:
        W_U = self.model.unembed.weight  # [d_output d_model]
        if program.encoding == "numerical":
            W_U[0, self.block(program).start] = 1
        else:
            for i, value in enumerate(self.sets[id(program)]):
                W_U[i, self.index(program, value)] = 1


def true_edges(nodes: list, components: dict[str, str], heads: dict[str, str], program: SOp) -> list[dict]:
    """The program's dataflow as circuit-graph edges, (writer of an SOp) → (the reader that reads it): a head's
    q reads the selector's queries, its k the keys, its v the aggregated SOp; a SelectorWidth's MLP reads its
    head; an MLP reads its inputs; the logits read the output. Each edge keeps the interpreter's name for the
    read (`key`: op label and channel) so the interpreter can patch it. The BOS plumbing every head has (the
    constant and the flag) is left out: it carries nothing about the input."""
    edges = []
    for node in nodes:
        reader = heads.get(node.label, components.get(node.label))
        for channel, sop in reads(node):
            edges.append({"writer": components[sop.label],
                          "reader": f"{reader}.{channel}" if channel in "qkv" else reader,
                          "sop": sop.label, "key": (node.label, channel)})
        if isinstance(node, SelectorWidth):
            edges.append({"writer": heads[node.label], "reader": components[node.label],
                          "sop": node.label + ".bos_weight", "key": (node.label, "width")})
    edges.append({"writer": components[program.label], "reader": "logits", "sop": program.label,
                  "key": (program.label, "output")})
    return edges


def live_edges(compiled: Compiled, pairs: list[tuple[list, list]]) -> list[bool]:
    """Which true edges matter on these (clean, corrupted) input pairs: patching that one read of the clean run
    with the corrupted input's value changes the program's output for some pair (run in the interpreter). An
    edge that only carries what every pair shares (positions, the length) cannot be found by corrupting the
    input, so discovery is graded on the live edges. A patch that leaves a categorical Aggregate several
    different values breaks the program, which counts as a change."""
    program = compiled.program

    def same(a: list, b: list) -> bool:
        return all(x == y if not isinstance(x, float) else abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))

    def changed(key: tuple[str, str], source: SOp, clean: list, bad: list) -> bool:
        try:
            patched = evaluate(program, bad) if key[1] == "output" else evaluate(
                program, clean, {key: evaluate(source, bad)})
        except RASPError:
            return True
        return not same(patched, evaluate(program, clean))

    nodes = {n.label: n for n in walk(program) if not isinstance(n, Selector)}
    live = []
    for edge in compiled.true_edges:
        label, channel = edge["key"]
        source = nodes[label] if channel in ("width", "output") else dict(reads(nodes[label]))[channel]
        live.append(any(changed(edge["key"], source, clean, bad) for clean, bad in pairs))
    return live
