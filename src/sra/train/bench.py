"""Training-throughput benchmark: the cost of an SRA step against a plain step, on random data.

A step here is what `sra.train.loop` does per optimizer step (grad_accum 1, one process), run by the same body,
`step.run_step`: forward (and the teacher for SRA), backward, gradient clipping with the non-finite check, AdamW, EMA
update, zero_grad; the step's draws come first, as in the loop. The spec of every mode is made by `resolve_spec`, as
`sra train` makes it. Plain and SRA steps (and the methods) share one model, EMA and optimizer and are timed
interleaved (plain, SRA, the methods, the teacher alone, the EMA alone, repeat), so that load from other processes on
a shared machine drifts into all alike; each figure is a median.

FLOP counts are analytic (`forward_flops`, `step_flops`), so that achieved TFLOP/s compare across devices and
precisions; `tests/test_bench.py` checks them against torch.utils.flop_counter.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass

import torch

from .. import distributed, options
from ..estimate import FirstBatchEstimate
from ..models import DiffusionTransformer
from ..models.presets import MODEL_NAMES
from ..objectives import TERMS, Batch, apply_label_drop
from ..objectives.align import fast_bf16
from ..options import option
from .config import DataShape, resolve_spec
from .ema import ema_decay, update_ema
from .step import build_objective, build_step, run_step

# ----------------------------------------------------------------------------------------------------------------
# FLOP count
# ----------------------------------------------------------------------------------------------------------------


def forward_flops(model: DiffusionTransformer, batch: int, *, depth: int | None = None, final: bool = True,
                  head: bool = False) -> int:
    """Forward FLOPs of `model` on `batch` inputs, through the first `depth` blocks (default all), with the final layer
    (`final`) and the SRA projection head on the block-s tokens (`head`).

    A matmul of (m, k) by (k, n) counts 2 m k n (one multiply-add = 2 FLOPs); bias adds, normalisations, activations,
    softmax, modulation and residual adds are not counted (they are O(T D) per block against O(T D^2)). With T tokens
    = (input / p)^2, width D, MLP width F (= 4 D), C input and C_out output channels, patch p, frequency size 256, per
    sample:
        patch embed      2 T (C p^2) D                        (a Conv2d with kernel = stride = p)
        timestep MLP     2 (256 D + D^2)                      (the label embedding is a table look-up: 0)
        per block        adaLN 2 D (6 D) + qkv 2 T D (3 D) + attention matmuls Q K^T and A V: 4 T^2 D
                         + proj 2 T D^2 + MLP 4 T D F          (= 24 T D^2 + 4 T^2 D + 12 D^2 for F = 4 D)
        final layer      adaLN 2 D (2 D) + linear 2 T D (p^2 C_out)
        SRA head         2 T D (2 D) + 2 T (2 D) D = 8 T D^2
    """
    d, t = model.hidden_size, model.x_embedder.num_patches
    p, c_in, c_out = model.patch_size, model.in_channels, model.out_channels
    f = model.blocks[0].mlp.fc1.out_features if model.blocks else 0
    freq = model.t_embedder.frequency_embedding_size
    depth = model.depth if depth is None else depth
    embed = 2 * t * c_in * p * p * d + 2 * (freq * d + d * d)
    block = 2 * d * 6 * d + 2 * t * d * 3 * d + 4 * t * t * d + 2 * t * d * d + 4 * t * d * f
    final_layer = 2 * d * 2 * d + 2 * t * d * p * p * c_out
    head_flops = 8 * t * d * d
    return batch * (embed + depth * block + final * final_layer + head * head_flops)


def step_flops(model: DiffusionTransformer, batch: int, *, sra: bool, block_out_t: int = 0) -> int:
    """FLOPs of one training step: forward + backward of the student counted as 3x its forward (the backward needs
    the gradients of inputs and weights, 2 matmuls per forward matmul), plus, with SRA, the projection head (also
    x3) and the teacher's forward through its first `block_out_t` blocks (no final layer, no backward). The optimizer
    and EMA updates are O(parameters) and not counted."""
    student = 3 * forward_flops(model, batch, head=sra)
    teacher = forward_flops(model, batch, depth=block_out_t, final=False) if sra else 0
    return student + teacher


# ----------------------------------------------------------------------------------------------------------------
# Benchmark configuration and the timed pieces
# ----------------------------------------------------------------------------------------------------------------


# Methods of the self-alignment family (docs/FAMILY.md) timed beside plain: `sra train` options on top of the SRA step's.
# The token-group recipes (a view of the batch, not a term) are the authors' DTS/AS settings (mask ratio 0.25, teacher
# time sra, teacher mask); every registered term with a `bench` setting adds its own (alignment off, that term on).
VIEWS = {
    "sra_dts_as": dict(mix=dict(mask_ratio=(0.25,))),
    "dts_as": dict(align=dict(weight=0.0), mix=dict(mask_ratio=(0.25,))),
    "self_flow": dict(mix=dict(mask_ratio=(0.25,), teacher_t="self_flow", teacher_mask=False)),
}
PLAIN = dict(align=dict(weight=0.0))  # the baseline every ratio is taken against


def methods() -> dict[str, dict]:
    """Method name -> its options: the token-group recipes, then each registered term's `bench` setting."""
    terms = {getattr(t, "bench_name", name): options.merge(PLAIN, {name: t.bench})
             for name, t in TERMS.items() if getattr(t, "bench", None)}
    return {**VIEWS, **terms}


def method_names() -> tuple[str, ...]:
    return tuple(methods())


@dataclass(kw_only=True)
class BenchConfig:
    """The `sra bench` options, declared once: these fields are the flags (`sra.options`)."""
    model: str = option("SiT-B/4", metavar="NAME", help=f"preset; one of {', '.join(MODEL_NAMES)}")
    depth: int | None = option(None, help="number of transformer blocks (unset: the preset's), as `sra train --depth`")
    input_size: int = option(32, help="model input side in pixels or latents (256 px images: 32)")
    in_channels: int = option(4, help="input channels (SD-VAE latents: 4)")
    num_classes: int = option(1000, help="class-embedding size")
    batch_size: int = option(8, help="images per step")
    mixed_precision: str = option("no", choices=("no", "bf16"),
                                  help="student autocast precision (fp16 is not benchmarked)")
    teacher_bf16: bool | None = option(None, help="run the teacher under bf16 autocast (unset: as `sra train` "
                                                  "resolves it for the preset)")
    teacher_fp8: bool = option(False, help="the teacher's block linears in FP8, as `sra train --teacher-fp8` (Hopper/Ada "
                                           "GPUs only)")
    compile: bool = option(False, help="torch.compile the trained model and the teacher's forward_features, as "
                                       "`sra train --compile`")
    adamw: str = option("fused", choices=("default", "foreach", "fused"),
                        help="AdamW implementation: fused (as `sra train`), foreach, or torch's default (foreach on "
                             "CUDA, per-tensor on CPU)")
    block_out_s: int = option(0, help="student block (1-indexed; 0: the paper's per-size default)")
    block_out_t: int = option(0, help="teacher block (1-indexed; 0: the paper's per-size default)")
    sra_weight: float = option(0.5, help="alignment weight of the SRA step (any value > 0 costs the same)")
    methods: tuple[str, ...] = option((), metavar="METHOD",
                                      help=f"more methods timed beside plain and SRA, space- or comma-separated: "
                                           f"{', '.join(method_names())}, or all (token groups: the authors' DTS/AS recipe; "
                                           f"repa: features as if stored)")
    repa_dim: int = option(768, help="REPA: encoder feature size (DINOv2-B: 768), features given as if stored")
    projector_dim: int = option(2048, help="REPA: projector width (REPA's default 2048; `sra train "
                                           "--projector-dim`)")
    warmup: int = option(2, help="untimed warm-up steps per mode (compilation happens here)")
    steps: int = option(5, help="timed rounds (plain, SRA, the methods, teacher, EMA); medians are reported")
    device: str | None = option(None, choices=("cpu", "cuda"), help="device (unset: cuda when available)")
    seed: int = option(0, help="seed for weights and random data")

    def __post_init__(self):
        # `--methods all`, `--methods a,b` and `--methods a b` name the same list
        names = tuple(m for v in self.methods for m in v.split(",") if m)
        self.methods = method_names() if names == ("all",) else names

    def validate(self) -> None:
        options.check_choices(self)
        options.check_finite(self)
        if self.steps < 1 or self.warmup < 0:
            raise ValueError("steps must be >= 1 and warmup >= 0")
        unknown = [m for m in self.methods if m not in method_names()]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; choices: {', '.join(method_names())}")
        if min(self.batch_size, self.input_size, self.in_channels, self.num_classes) < 1:
            raise ValueError("batch size, input size, channels and classes must be >= 1")
        if min(self.repa_dim, self.projector_dim) < 1:
            raise ValueError("--repa-dim and --projector-dim must be >= 1")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda asked for but CUDA is not available")
        if not self.sra_weight > 0:
            raise ValueError("the SRA step needs --sra-weight > 0")
        bench_spec(self, "cpu")  # every option `sra train` would refuse, refused here in its words


def bench_spec(cfg: BenchConfig, device: str, method: str | None = None):
    """The run spec `sra train` would resolve for these settings (layers, teacher precision, EMA decay), with a
    method's options on top: made by the same function as `sra train`'s, on random data of the benched shape."""
    flags = {"model": cfg.model, "depth": cfg.depth, "batch_size": cfg.batch_size,
             "mixed_precision": cfg.mixed_precision, "compile": cfg.compile, "seed": cfg.seed, "report_to": "none",
             "align": {"weight": cfg.sra_weight, "block_out_s": cfg.block_out_s, "block_out_t": cfg.block_out_t,
                       "teacher_bf16": cfg.teacher_bf16, "teacher_fp8": cfg.teacher_fp8},
             "repa": {"projector_dim": cfg.projector_dim}}
    flags = options.merge(flags, PLAIN if method == "plain" else methods()[method]) if method else flags
    shape = DataShape((cfg.in_channels, cfg.input_size, cfg.input_size), cfg.num_classes, cfg.batch_size)
    return resolve_spec(flags, data=shape, device=device)[0]


class _Timer:
    """Wall-clock timing of a callable; on CUDA synchronised before and after (the step itself never syncs here)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def _peak_memory_mb(device: torch.device) -> float:
    """CUDA: max_memory_allocated since the last reset. CPU: the process's peak resident set (never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if platform.system() == "Darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def run_benchmark(cfg: BenchConfig, log=print) -> dict:
    """Time plain and SRA training steps; return the figures as a flat JSON-able dict (see docs/PERFORMANCE.md)."""
    cfg.validate()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tc = bench_spec(cfg, device.type)
    align = tc.term("align")
    s, m, teacher_bf16 = align.block_out_s, align.block_out_t, align.teacher_bf16
    if teacher_bf16 and not fast_bf16(device):
        log(f"note: bf16 is emulated on this {device.type} (no native bf16 units); the bf16 teacher will be slow")

    # Model, EMA (= teacher), wrappers, optimizer, objective: built by the training loop's own builder; the other
    # modes are the same step with their own objective (REPA: features as if stored, its projector's parameters
    # added to the optimizer).
    torch.manual_seed(cfg.seed)
    built = build_step(tc, distributed.Context(device=device), adamw=cfg.adamw)
    model, ema = built.model, built.ema
    specs = {"plain": bench_spec(cfg, device.type, "plain"), "sra": tc,
             **{name: bench_spec(cfg, device.type, name) for name in cfg.methods}}
    steps = {}
    for mode, spec in specs.items():
        objective = built.objective if mode == "sra" else build_objective(
            spec, built.process, {"z_dim": cfg.repa_dim, "hidden_size": model.hidden_size,
                                  "in_channels": model.in_channels, "device": device})
        objective.modules.to(device)
        if len(objective.modules):
            built.opt.add_param_group({"params": list(objective.modules.parameters())})
        teacher = objective.teacher(model, ema)
        steps[mode] = dataclasses.replace(built, objective=objective,
                                          teacher=built.teacher if teacher is not None else None)
    n, shape = cfg.batch_size, (cfg.in_channels, cfg.input_size, cfg.input_size)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    x0 = torch.randn((n, *shape), generator=gen, device=device)
    y = torch.randint(0, cfg.num_classes, (n,), generator=gen, device=device)
    decay = ema_decay(1000, decay=tc.ema_decay, half_life_kimg=None, batch_size=n, warmup=False)
    tokens = (cfg.input_size // model.patch_size) ** 2
    features = torch.randn((n, tokens, cfg.repa_dim), generator=gen, device=device)  # REPA targets, as if stored

    def step(mode: str) -> None:
        """One optimizer step, as in the loop (steps 5-7): the draws, then the loop's step body."""
        s_ = steps[mode]
        s_.objective.prepare(model)  # unused heads are frozen, as the loop does
        draws = s_.objective.draw(n, shape, device, gen)
        stored = features if specs[mode].term("repa").active else None
        run_step(s_, [(x0, y, stored, 0)], draws, s_.objective.weights(), decay, tc.max_grad_norm, {})

    sra_term = built.objective.term("align")

    def teacher_only() -> None:
        """The SRA step's teacher call alone (the term's own teacher path), on inputs drawn as the objective draws
        them."""
        built.ema_ready()
        draws = built.objective.draw(n, shape, device, gen)
        batch = Batch(model, built.teacher, x0, draws["noise"], draws["t"], draws, apply_label_drop(model, y,
                      draws["drop"]), y, {}, None)
        with built.autocast():
            sra_term.teacher_forward(batch)

    def ema_only() -> None:
        built.ema_ready()
        steps["sra"].objective.prepare(model)  # the SRA step's EMA covers the head too
        update_ema(ema, model, decay)

    timer = _Timer(device)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    # Warm-up (and compilation) per mode; peak memory of each mode is read right after its warm-up.
    mem = {}
    modes = tuple(specs)
    # the cost, said after the first step: warm-ups, then rounds of every mode plus the teacher and EMA timings
    estimate = FirstBatchEstimate(len(modes) * max(cfg.warmup, 1) + cfg.steps * (len(modes) + 1), "steps", write=log,
                                  note="at the first plain step's time; the teacher and EMA timings count as one step")
    for mode in modes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(max(cfg.warmup, 1)):
            dt = timer(lambda: step(mode))
            log(f"warm-up {mode} {i + 1}: {dt:.3f} s")
            estimate.done(1)
        mem[mode] = _peak_memory_mb(device)
    teacher_only()
    ema_only()

    times = {"plain": [], "sra": [], "teacher": [], "ema": [], **{m: [] for m in cfg.methods}}
    for r in range(cfg.steps):
        for mode in modes:
            times[mode].append(timer(lambda: step(mode)))
        times["teacher"].append(timer(teacher_only))
        times["ema"].append(timer(ema_only))
        log(f"round {r + 1}/{cfg.steps}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = {"plain": step_flops(model, n, sra=False), "sra": step_flops(model, n, sra=True, block_out_t=m)}
    return {
        "model": cfg.model, "depth": model.depth, "input_size": cfg.input_size, "in_channels": cfg.in_channels,
        "batch_size": n,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "mixed_precision": cfg.mixed_precision, "teacher_bf16": bool(teacher_bf16), "teacher_fp8": cfg.teacher_fp8,
        "compile": cfg.compile,
        "adamw": cfg.adamw,
        "block_out_s": s, "block_out_t": m, "warmup": cfg.warmup, "steps": cfg.steps,
        "step_s_plain": med["plain"], "step_s_sra": med["sra"],
        "images_per_s_plain": n / med["plain"], "images_per_s_sra": n / med["sra"],
        "flops_plain": flops["plain"], "flops_sra": flops["sra"],
        "tflops_plain": flops["plain"] / med["plain"] / 1e12, "tflops_sra": flops["sra"] / med["sra"] / 1e12,
        "peak_mem_plain_mb": mem["plain"], "peak_mem_sra_mb": mem["sra"],
        "peak_mem_kind": "cuda_max_memory_allocated" if device.type == "cuda" else "process_max_rss",
        "sra_over_plain": med["sra"] / med["plain"], "flop_ratio": flops["sra"] / flops["plain"],
        # per-round ratios, medianed: robust to load that drifts between rounds on a shared machine
        "sra_over_plain_paired": statistics.median(a / b for a, b in zip(times["sra"], times["plain"])),
        "teacher_s": med["teacher"], "ema_s": med["ema"],
        "teacher_fraction": med["teacher"] / med["sra"], "ema_fraction": med["ema"] / med["sra"],
        "load_avg_start": load_start, "load_avg_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "times_s": {k: [round(v, 5) for v in vs] for k, vs in times.items()},
        # the family's methods beside plain: median step time, and the per-round ratio to plain, medianed
        "methods": {k: {"step_s": med[k], "images_per_s": n / med[k], "peak_mem_mb": mem[k],
                        "over_plain_paired": statistics.median(a / b for a, b in zip(times[k], times["plain"]))}
                    for k in cfg.methods},
    }
