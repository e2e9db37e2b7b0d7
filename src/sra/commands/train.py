"""`sra train`: flags -> TrainConfig -> sra.train.train."""
from __future__ import annotations

import argparse
import json

from ..models.presets import MODEL_NAMES
from ..objectives.align import DISTANCES, INTERVALS, TEACHERS
from ..transport.path import PATHS, TIME_SAMPLINGS


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", help="train a SiT/DiT with SRA (no flags: a tiny SiT+SRA on Fashion-MNIST, ~10 min on a CPU)",
        description="Train a diffusion transformer with Self-Representation Alignment. With no flags: a tiny SiT+SRA "
                    "on Fashion-MNIST (digits if absent) on the CPU. Running the same command again resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="SiT-T/4", metavar="NAME", help=f"preset; one of {', '.join(MODEL_NAMES)}")
    g.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder, class-subfolder image folder, latent "
                   "store from `sra prepare`, or 'digits' (default: Debian's Fashion-MNIST, else sklearn digits)")
    g.add_argument("--num-classes", type=int, default=None, help="number of classes (default: from the data)")
    g = p.add_argument_group("run folder")
    g.add_argument("--output-dir", default="runs", help="parent folder of runs")
    g.add_argument("--exp-name", default="demo", help="run folder name (OUTPUT_DIR/EXP_NAME)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=64, help="global batch in images (all ranks, all micro-steps)")
    g.add_argument("--grad-accum", type=int, default=1, help="gradient-accumulation micro-steps per optimizer step")
    g.add_argument("--max-train-steps", type=int, default=1200, help="optimizer steps")
    g.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 1e-4; 1e-3 for *-T presets)")
    g.add_argument("--lr-warmup-steps", type=int, default=None, help="linear warm-up steps (default 0; 200 for *-T)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping threshold (L2 norm)")
    g.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"], help="autocast precision")
    g.add_argument("--compile", action="store_true", help="torch.compile the trained model")
    g.add_argument("--fsdp", action="store_true",
                   help="shard the model with FSDP2 under torchrun (for L/XL); default is DDP when world size > 1")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute block activations during backward to save memory")
    g = p.add_argument_group("EMA (sampling model and SRA teacher)")
    g.add_argument("--ema-decay", type=float, default=None, help="per-step decay (default 0.9999; 0.999 for *-T)")
    g.add_argument("--ema-half-life-kimg", type=float, default=None,
                   help="EMA half-life in thousands of images (overrides --ema-decay)")
    g.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction, default=None,
                   help="cap the decay at (1+n)/(10+n) at step n (default: on for *-T presets)")
    g = p.add_argument_group("objective")
    g.add_argument("--path-type", default="linear", choices=PATHS, help="SiT interpolant path")
    g.add_argument("--weighting", default="uniform", choices=TIME_SAMPLINGS, help="SiT training-time distribution")
    g.add_argument("--sra-weight", type=float, default=0.5, help="alignment weight lambda; 0 = plain training")
    g.add_argument("--loss-type", default="cos", choices=DISTANCES,
                   help="alignment distance: cos (1 - cosine per token), sml1 (smooth-L1, beta 0.05), l1, l2")
    g.add_argument("--block-out-s", type=int, default=0, help="student block (1-indexed; 0: the paper's per-size default)")
    g.add_argument("--block-out-t", type=int, default=0, help="teacher block (1-indexed; 0: the paper's per-size default)")
    g.add_argument("--t-max", type=float, default=0.2, help="teacher time offset bound: t' = t - U(0, t_max)")
    g.add_argument("--t-interval", default="uniform", choices=INTERVALS,
                   help="offset k: uniform U(0, t_max), fixed t_max, or none (k = 0)")
    g.add_argument("--no-head", dest="use_head", action="store_false", help="align raw student tokens (ablation)")
    g.add_argument("--teacher", default="ema", choices=TEACHERS, help="teacher network: the EMA or the online model")
    g.add_argument("--teacher-bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="run the teacher under bf16 autocast (default: on where bf16 is native: CUDA, AVX512-BF16/AMX CPUs)")
    g.add_argument("--legacy-epoch-decay", action="store_true",
                   help="the authors' smooth-L1 schedule: weight decays x0.1 per 1000 epochs after epoch 149")
    g = p.add_argument_group("logging")
    g.add_argument("--seed", type=int, default=0, help="global seed")
    g.add_argument("--log-every", type=int, default=50, help="steps between metrics.jsonl lines")
    g.add_argument("--sample-every", type=int, default=500, help="steps between sample grids")
    g.add_argument("--sample-steps", type=int, default=30, help="sampler steps for the sample grids (Euler ODE for SiT, DDIM for DiT)")
    g.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    g.add_argument("--eval-every", type=int, default=0,
                   help="steps between FD-FMNIST evaluations of the EMA, logged to metrics.jsonl (Fashion-MNIST; 0: off)")
    g.add_argument("--eval-samples", type=int, default=1000, help="samples per in-training evaluation")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (datasets not held in memory)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    g.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return p


def config_from_args(args):
    from ..objectives import AlignConfig, FlowConfig
    from ..train import TrainConfig

    return TrainConfig(
        model=args.model, data_dir=args.data_dir, num_classes=args.num_classes, output_dir=args.output_dir,
        exp_name=args.exp_name, batch_size=args.batch_size, grad_accum=args.grad_accum,
        max_train_steps=args.max_train_steps, lr=args.lr, lr_warmup_steps=args.lr_warmup_steps,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, mixed_precision=args.mixed_precision,
        compile=args.compile, fsdp=args.fsdp, activation_checkpointing=args.activation_checkpointing,
        ema_decay=args.ema_decay, ema_half_life_kimg=args.ema_half_life_kimg,
        ema_warmup=args.ema_warmup, flow=FlowConfig(path=args.path_type, time_sampling=args.weighting),
        align=AlignConfig(weight=args.sra_weight, distance=args.loss_type, block_out_s=args.block_out_s,
                          block_out_t=args.block_out_t, t_max=args.t_max, interval=args.t_interval,
                          use_head=args.use_head, teacher=args.teacher, teacher_bf16=args.teacher_bf16,
                          legacy_epoch_decay=args.legacy_epoch_decay),
        seed=args.seed, log_every=args.log_every, sample_every=args.sample_every, sample_steps=args.sample_steps,
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, eval_samples=args.eval_samples,
        num_workers=args.num_workers, progress=args.progress)


def run(args) -> int:
    import torch

    from ..data import load_dataset
    from ..train import train

    cfg = config_from_args(args)
    if args.dry_run:
        ds = load_dataset(cfg.data_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(json.dumps(cfg.resolve(ds.shape, ds.num_classes, device).to_dict(), indent=2))
        return 0
    run_dir = train(cfg)
    from ..distributed import print0
    print0(f"run folder: {run_dir}")
    return 0
