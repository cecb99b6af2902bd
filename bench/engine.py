"""Engine benchmark: each method's time as a ratio to plain passes of the same batch (prints figures).

Run with scripts/bench.sh engine [--model smollm2-135m --task ioi | --layers 12 --heads 12 --d-model 768]
[--batch 32 --pos 16 --device cpu --dtype float32 --peer --acdc 300]. Without ``--model`` the model is
GPT-2-small-shaped (or, with ``--arch llama --kv-heads --d-mlp``, Llama-shaped) with random weights and
GPT-2's vocabulary size and prompts are random token ids; ``--memory`` prints only the peak-memory rows
(EAP, EAP-IG, engine set-up and two learned-mask steps, as ratios to the forward + backward's peak); with ``--model``,
the model is loaded by name and the batch is ``--batch`` prompts of ``--task``.
Floors: one plain forward and one forward+backward of the loaded bridge (the same model object
the engine patches). Peak memory is the peak above the starting point during each measurement
(CUDA: allocator peak; CPU: sampled resident set size after returning freed memory to the
system; with ``--memory`` every allocation of 128 KiB or more is made its own mapping, returned to the
system when freed, so the resident set follows the live tensors rather than the heap's high-water mark, at
the price of slower runs). ``--peer`` also runs
TransformerLens's edge attribution patching on the same bridge, prompts and metric
(``bench/peer_eap.py``) and prints both wall times, their ratio and the Spearman agreement of |score|.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from circat.service.types import Ablation, IgPoints, Method
from circat.workers.engine.acdc import acdc
from circat.workers.engine.attribution import edge_attribution
from circat.workers.engine.edge_pruning import PruningConfig, train_gates
from circat.workers.engine.evaluate import EdgeEvaluator, node_baselines
from circat.workers.engine.gim import GimConfig
from circat.workers.engine.layout import layout_for
from circat.workers.engine.methods import RunSpec, discover
from circat.workers.engine.node_search import DEFAULT_LEVELS, component_order, sweep
from circat.workers.engine.patching import PatchingEngine
from circat.workers.metrics import final_logits, task_metric
from circat.workers.models import LoadedModel, load_model
from circat.workers.tasks import Metric, Split, get_task, registered_tasks
from circat.workers.tasks.encode import TaskBatch, encode
from circat.workers.tasks.render import for_tokenizer
from circat.workers.toy.train import toy_tokenizer

Row = tuple[str, float, int, float | None, str | None]


class Peak:
    """Peak memory above the start of a ``with`` block."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> Peak:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back so the baseline is honest
            proc = psutil.Process()
            self._base = proc.memory_info().rss
            self._thread = threading.Thread(target=self._sample, args=(proc,), daemon=True)
            self._thread.start()
        return self

    def _sample(self, proc: psutil.Process) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss - self._base)
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()


def own_mappings(threshold: int = 1 << 17) -> None:
    """Make each CPU allocation of ``threshold`` bytes or more its own mapping (glibc's ``M_MMAP_THRESHOLD``,
    which also stops glibc raising the threshold), so freed tensors leave the resident set at once."""
    ctypes.CDLL("libc.so.6").mallopt(-3, threshold)


def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> tuple[float, int]:
    """Median wall time of ``fn`` over ``repeat`` runs after one warm-up, and its peak memory."""
    fn()
    times = []
    with Peak(device) as peak:
        for _ in range(repeat):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return statistics.median(times), peak.peak


def build(args: argparse.Namespace, root: Path) -> tuple[LoadedModel, TaskBatch, Metric]:
    """The model and batch: a named model with ``--batch`` prompts of ``--task``, else random GPT-2."""
    if args.model:
        model = load_model(args.model, device=args.device, dtype=args.dtype)
        task = for_tokenizer(get_task(args.task), model.tokenizer)
        batch = encode(task.examples(args.batch, seed=0, split=Split.ALL), model.tokenizer)
        return model, batch.to(model.device), task.metric
    tok = toy_tokenizer(registered_tasks())
    torch.manual_seed(0)
    random_model(args).save_pretrained(root)
    tok.save_pretrained(root)
    model = load_model(str(root), device=args.device, dtype=args.dtype)
    g = torch.Generator().manual_seed(1)
    shape = (args.batch, args.pos)
    ids = torch.randint(1, 50257, shape, generator=g)
    ans = torch.randint(1, 50257, (args.batch, 1), generator=g)
    wrong = torch.randint(1, 50257, (args.batch, 1), generator=g)
    lengths = torch.full((args.batch,), args.pos)
    ones = torch.ones((args.batch, 1), dtype=torch.bool)
    batch = TaskBatch(ids, torch.randint(1, 50257, shape, generator=g), lengths, lengths, ans, ones, wrong, ones)
    return model, batch.to(model.device), Metric.LOGIT_DIFF


def random_model(args: argparse.Namespace) -> GPT2LMHeadModel | LlamaForCausalLM:
    """A randomly initialised GPT-2 or Llama of the requested shape (GPT-2's vocabulary size)."""
    if args.arch == "llama":
        cfg = LlamaConfig(vocab_size=50257, hidden_size=args.d_model, intermediate_size=args.d_mlp or 4 * args.d_model,
                          num_hidden_layers=args.layers, num_attention_heads=args.heads,
                          num_key_value_heads=args.kv_heads or args.heads, max_position_embeddings=128,
                          bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
        return LlamaForCausalLM(cfg)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=64, n_embd=args.d_model, n_layer=args.layers,
                                      n_head=args.heads, bos_token_id=0, eos_token_id=0))


def memory_rows(model: LoadedModel, batch: TaskBatch, metric: Metric, fb_mem: int, dev: torch.device) -> list[Row]:
    """Peak memory of EAP, EAP-IG and two learned-mask steps, each with its engine's set-up, as ratios to the
    forward + backward's peak."""
    def engine() -> PatchingEngine:
        return PatchingEngine(model, batch, Ablation.RESAMPLE, metric)

    rows: list[Row] = []
    for name, fn in (("EAP", lambda: edge_attribution(engine())),
                     ("EAP-IG (5 steps)", lambda: edge_attribution(engine(), steps=5, points=IgPoints.MIB))):
        t, mem = timed(fn, dev, 1)
        rows.append((f"{name}: peak memory", t, mem, mem / fb_mem, "<= 1.5 x peak of fwd+bwd"))
    base = EdgeEvaluator(engine()).baselines
    steps = PruningConfig(steps=2, checkpoint_every=10**9)
    init = torch.full((layout_for(model.shape).graph.n_edges,), 2.0)
    # A fresh engine inside the measurement, as for EAP: its buffers kept between steps count.
    t, mem = timed(lambda: train_gates(engine(), steps, init, base.full, base.empty), dev, 1)
    rows.append(("edge-pruning, set-up + 2 steps: peak memory", t, mem, mem / fb_mem, "<= 1.5 x peak of fwd+bwd"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a model name (toy, smollm2-135m, hub name, directory) instead of random GPT-2")
    p.add_argument("--task", default="ioi", help="the task whose prompts make the batch (with --model)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--peer", action="store_true", help="also run TransformerLens's edge attribution patching")
    p.add_argument("--sweep", type=int, default=None, help="time only this many components of the node-search sweep")
    p.add_argument("--acdc", type=int, default=300,
                   help="time ACDC on this many edges tried (0: skip; more than the run tries: the whole run)")
    p.add_argument("--arch", default="gpt2", choices=["gpt2", "llama"], help="the random model's architecture")
    p.add_argument("--kv-heads", type=int, default=None, help="Llama: key/value heads (grouped-query attention)")
    p.add_argument("--d-mlp", type=int, default=None, help="Llama: MLP width (default 4 x d_model)")
    p.add_argument("--memory", action="store_true", help="only the memory rows: EAP, EAP-IG, two learned-mask steps")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--pos", type=int, default=16)
    p.add_argument("--device", default=None)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    if args.memory:
        own_mappings()
    with tempfile.TemporaryDirectory() as tmp:
        model, batch, metric = build(args, Path(tmp))
    dev, bridge, shape = model.device, model.bridge, model.shape
    print(f"model: {model.name}, {shape.n_layers} layers x {shape.n_heads} heads, d_model {shape.d_model}; "
          f"batch {tuple(batch.clean.shape)}; device {dev}, {args.dtype}; torch threads {torch.get_num_threads()}")

    def plain() -> None:
        with torch.no_grad():
            bridge(batch.clean)

    def fwd_bwd() -> None:
        def leaf(x, hook):
            return x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = bridge.run_with_hooks(batch.clean, fwd_hooks=[("blocks.0.hook_resid_pre", leaf)])
            task_metric(metric, final_logits(logits, batch.lengths), batch).backward()

    f, f_mem = timed(plain, dev, args.repeat)
    fb, fb_mem = timed(fwd_bwd, dev, args.repeat)
    rows: list[Row] = [("plain forward", f, f_mem, None, None), ("forward + backward", fb, fb_mem, None, None)]
    if args.memory:
        print_rows(rows + memory_rows(model, batch, metric, fb_mem, dev))
        return

    def eap() -> torch.Tensor:
        return edge_attribution(PatchingEngine(model, batch, Ablation.RESAMPLE, metric))

    t_eap, mem = timed(eap, dev, args.repeat)
    rows.append(("EAP (engine set-up + scores)", t_eap, mem, t_eap / (fb + f), "<= 1.5 x (fwd+bwd + fwd)"))
    t, mem = timed(lambda: edge_attribution(PatchingEngine(model, batch, Ablation.RESAMPLE, metric), gim=GimConfig()),
                   dev, args.repeat)
    rows.append(("EAP with GIM gradients (ratio to EAP)", t, mem, t / t_eap, "<= 1.1 x EAP"))

    spec = RunSpec(model.name, args.task, Method.EAP, metric=metric, n_prompts=len(batch))
    started = time.perf_counter()
    with Peak(dev) as peak:
        run = discover(model, batch, spec)
    t = time.perf_counter() - started
    masks = run.circuits[0].annotations["evaluation"]["masks_evaluated"]
    rows.append((f"EAP end to end, 4 levels + 2 curves ({masks} masks)", t, peak.peak, t / f, "<= 30 x fwd"))

    engine = PatchingEngine(model, batch, Ablation.RESAMPLE, metric)
    n = engine.layout.graph.n_edges
    mask = (torch.rand(1, n, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    t, mem = timed(lambda: engine.run_edges(mask), dev, args.repeat)
    rows.append(("masked forward (50 % of edges)", t, mem, t / f, "<= 1.5 x fwd"))
    t, mem = timed(lambda: engine.run_nodes(torch.ones(1, engine.layout.graph.n_nodes)), dev, args.repeat)
    rows.append(("node-masked forward", t, mem, t / f, None))

    rows += [sweep_row(engine, args.sweep, f, dev, levels) for levels in ((0.8,), DEFAULT_LEVELS)]
    base = EdgeEvaluator(engine).baselines
    steps = PruningConfig(steps=args.repeat + 1, checkpoint_every=10**9)
    t, mem = timed(lambda: train_gates(engine, steps, torch.full((n,), 2.0), base.full, base.empty), dev, 1)
    rows.append(("edge-pruning training step", t / steps.steps, mem, t / steps.steps / fb, "<= 1.5 x (fwd+bwd)"))
    if args.acdc:
        rows.append(acdc_row(model, batch, args.acdc, f, dev))
        rows.append(acdc_layers_row(model, batch, f, dev))
    if args.peer:
        rows += peer_rows(model, batch, metric, eap().cpu().numpy(), t_eap, dev)

    print_rows(rows)


def print_rows(rows: list[Row]) -> None:
    """The figures as a fixed-width table."""
    print(f"{'measurement':44} {'seconds':>9} {'peak MB':>9} {'ratio':>7}  target")
    for name, secs, mem, ratio, target in rows:
        r = "" if ratio is None else f"{ratio:7.2f}"
        print(f"{name:44} {secs:9.3f} {mem / 2**20:9.0f} {r:>7}  {target or ''}")


def sweep_row(engine: PatchingEngine, limit: int | None, f: float, dev: torch.device,
              levels: tuple[float, ...]) -> tuple[str, float, int, float | None, str | None]:
    """One backward sweep of node search at ``levels`` in lockstep (its first ``limit`` components when given)."""
    order = component_order(engine.layout, "backward")[:limit]
    keep = torch.ones((len(levels), engine.layout.graph.n_nodes))
    baselines = node_baselines(engine)
    started = time.perf_counter()
    with Peak(dev) as peak:
        sweep(engine, order, keep, torch.tensor(levels, dtype=torch.float64), baselines, lambda: None)
    t = time.perf_counter() - started
    what = "one sweep" if limit is None else f"first {len(order)} components"
    return (f"node search, {what}, {len(levels)} level(s)", t, peak.peak, t / (len(order) * f),
            "<= 1.3 x (components x fwd)")


class _Enough(Exception):
    """Raised by the ACDC row's tick once its edges are tried."""


def acdc_row(model: LoadedModel, batch: TaskBatch, limit: int, f: float,
             dev: torch.device) -> tuple[str, float, int, float | None, str | None]:
    """ACDC (KL) on its first ``limit`` edges tried, at the threshold that removes 98 % of 64 logits edges tried
    one at a time on the full model (the issue's regime: about 2 % kept); seconds per edge tried over a forward."""
    engine = PatchingEngine(model, batch, Ablation.RESAMPLE, Metric.KL)
    evaluator = EdgeEvaluator(engine)
    graph = engine.layout.graph
    sample = np.arange(graph.n_edges - 64, graph.n_edges)
    trials = np.ones((64, graph.n_edges), dtype=bool)
    trials[np.arange(64), sample] = False
    tau = float(np.quantile(evaluator.metrics(trials), 0.98))
    tried = [0]

    def tick(n: int) -> None:
        tried[0] = n
        if n >= limit:
            raise _Enough

    started = time.perf_counter()
    kept = None
    with Peak(dev) as peak, contextlib.suppress(_Enough):
        kept = int(acdc(evaluator, tau, tick).keep.sum())
    t = time.perf_counter() - started
    run = f"first {tried[0]} edges tried" if kept is None else f"whole run, {tried[0]} edges tried, {kept} kept"
    return f"ACDC, {run} (tau {tau:.2g})", t, peak.peak, t / (tried[0] * f), "<= 0.5 x (edges tried x fwd)"


def acdc_layers_row(model: LoadedModel, batch: TaskBatch, f: float, dev: torch.device, kept: float = 0.02,
                    trials: int = 4) -> tuple[str, float, int, float | None, str | None]:
    """ACDC's cost per edge tried if it tried every edge, keeping ``kept`` of them: for each layer, the median time
    of ``trials`` single-edge trials into it in the state ACDC is in when it reaches that layer (every edge into an
    earlier layer kept, those into later layers and the logits kept with probability ``kept``), weighted by the
    number of edges into the layer (the logits' edges at the last layer's cost); over a plain forward."""
    engine = PatchingEngine(model, batch, Ablation.RESAMPLE, Metric.KL)
    layout, rng = engine.layout, np.random.default_rng(4)
    n = layout.graph.n_edges
    total = 0.0
    for slots in layout.layers:
        last = slots.layer + 1 == len(layout.layers)
        later = layout.logits_start if last else layout.layers[slots.layer + 1].attn_start
        state = np.ones(n, dtype=bool)
        state[later:] = rng.random(n - later) < kept
        masks = np.repeat(state[None], trials, axis=0)
        tried = rng.choice(np.arange(slots.attn_start, later), trials, replace=False)
        masks[np.arange(trials), tried] = False
        times = []
        for mask in masks:
            started = time.perf_counter()
            engine.evaluate_edges(torch.as_tensor(mask[None], dtype=torch.float32))
            times.append(time.perf_counter() - started)
        total += ((n if last else later) - slots.attn_start) * statistics.median(times)
    return (f"ACDC per edge, every edge tried ({kept:.0%} kept), by layer", total / n, 0, total / (n * f),
            "<= 0.5 x (edges tried x fwd)")


def peer_rows(model: LoadedModel, batch: TaskBatch, metric: Metric, ours: np.ndarray, t_ours: float,
              dev: torch.device) -> list[tuple[str, float, int, float | None, str | None]]:
    """TransformerLens's edge attribution patching on the same inputs, against the project's EAP."""
    from bench.peer_eap import peer_scores, spearman
    from circat.workers.engine.layout import layout_for

    graph = layout_for(model.shape).graph
    started = time.perf_counter()
    with Peak(dev) as peak:
        theirs = peer_scores(model, batch, metric, graph)
    t = time.perf_counter() - started
    rho = spearman(np.abs(ours), np.abs(theirs))
    note = f"peer/ours wall time; Spearman |score| {rho:.3f} (peer linearises at corrupted, ours at clean)"
    return [("peer: TransformerLens edge attribution_patch", t, peak.peak, t / t_ours, note)]


if __name__ == "__main__":
    main()
