"""Token groups: dual-timestep scheduling (DTS) and attention separation (AS), with the teacher-time options of the
authors' follow-up to SRA (SiT-SRA_DTS_AS; it compares SRA with Self-Flow, arXiv 2603.06507). A view of the batch
that composes with any process: for SiT as the authors do, for DiT as our extension (docs/FAMILY.md).

Each image's tokens are split at random into groups of fixed sizes (mask ratio). With DTS every group is corrupted at
its own time t_g from the same x0 and noise; the model sees the groups mixed patch by patch, each token conditioned
on its own time (adaLN per token), and regresses the target mixed the same way. With AS a token attends only to its
own group. The authors mix after the patch embedding; because the embedding is one convolution per patch, mixing whole
patches of the inputs is the same thing, and since the corruption is pointwise in t the mixed input is the process's
corruption at a per-pixel time (each patch at its group's time, `process.corrupt` with per-token times).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..models.dit import TokenTimes
from ..options import option

TEACHER_TIMES = ("sra", "self_flow", "same")


@dataclass(frozen=True, kw_only=True)
class MixConfig:
    mask_ratio: tuple[float, ...] = option(
        (0.0,), metavar="R",
        group="token groups: dual-time scheduling and attention separation (flags as the authors' SiT-SRA_DTS_AS)",
        help="token-group shares per image: one R in (0, 1) gives groups R, 1 - R (the authors' recipe: 0.25); several "
             "values (0.5 0.3 0.2) are normalised to sum 1; 0 or >= 1: one group, i.e. plain SRA")
    dual_time_scheduling: bool = option(True, help="each token group at its own time t_g (off: all groups share one t)")
    attention_separation: bool = option(True, help="tokens attend only within their group (the student, and the "
                                                   "teacher with the teacher mask)")
    teacher_t: str = option("sra", choices=TEACHER_TIMES,
                            help="teacher time: sra (t_g - U(0, t_max) per group), self_flow (the lowest group time), "
                                 "same (exactly the student's input)")
    teacher_mask: bool = option(True, help="the teacher sees the same groups (--no-teacher-mask: the whole image at "
                                           "the lowest time, full attention; self_flow only, as the authors' code)")
    full_sample_prob: float = option(0.0, help="probability that a two-group sample is one group instead (all its "
                                               "tokens in group 1)")

    def ratios(self) -> list[float]:
        """Group shares, normalised as the authors' code does: one value r gives [r, 1 - r] (or [1] when r is 0 or
        >= 1); several values drop zeros and are divided by their sum."""
        r = [float(v) for v in self.mask_ratio]
        if len(r) == 1:
            return [r[0], 1.0 - r[0]] if 0.0 < r[0] < 1.0 else [1.0]
        pos = [v for v in r if v > 0]
        return [v / sum(pos) for v in pos] if pos else [1.0]

    @property
    def active(self) -> bool:
        return len(self.ratios()) > 1

    def validate(self) -> None:
        if not self.mask_ratio or any(v < 0 for v in self.mask_ratio):
            raise ValueError(f"mask ratios must be one or more non-negative numbers (got {list(self.mask_ratio)})")
        if self.teacher_t not in TEACHER_TIMES:
            raise ValueError(f"unknown teacher time {self.teacher_t!r}; choices: {', '.join(TEACHER_TIMES)}")
        if not 0.0 <= self.full_sample_prob <= 1.0:
            raise ValueError(f"full-sample probability must be in [0, 1] (got {self.full_sample_prob})")
        if self.full_sample_prob > 0 and len(self.ratios()) != 2:
            raise ValueError("--full-sample-prob needs exactly two token groups (one --mask-ratio value in (0, 1))")
        if self.active and not self.teacher_mask and self.teacher_t != "self_flow":
            raise ValueError(f"--no-teacher-mask is defined for --teacher-t self_flow only (got {self.teacher_t})")


def group_counts(ratios: list[float], num_tokens: int) -> list[int]:
    """Tokens per group as the authors' `_compute_group_counts` gives them, ties included: floor(r T) in float32, and
    the remaining tokens one each to the groups that `torch.topk` ranks first by their float32 fractional parts.
    (Float32 products and topk's order among equal fractions decide ties: [0.7, 0.3] of 5 tokens is [4, 1].)"""
    exact = torch.tensor(ratios, dtype=torch.float32) * num_tokens
    counts = exact.floor().long()
    remainder = num_tokens - int(counts.sum())
    if remainder > 0:
        counts[torch.topk(exact - counts.float(), k=remainder).indices] += 1
    return counts.tolist()


@functools.lru_cache(maxsize=64)
def sorted_group_ids(ratios: tuple[float, ...], num_tokens: int, device: torch.device) -> torch.Tensor:
    """Group id of each position of a sorted permutation (T,): counts[0] zeros, counts[1] ones, ... (`group_counts`).
    Built once per layout and device: rebuilding it per step would copy from the host and wait for the GPU."""
    counts = group_counts(list(ratios), num_tokens)
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)).to(device)


def draw_groups(cfg: MixConfig, n: int, num_tokens: int, keys: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """Group ids (n, T) from uniform keys (n, T) and uniforms full (n,): a random permutation per sample (the argsort
    of its keys) assigns the first counts[0] positions to group 0, and so on; a full sample is all group 1."""
    ordered = sorted_group_ids(tuple(cfg.ratios()), num_tokens, keys.device)  # (T,)
    groups = torch.empty((n, num_tokens), dtype=torch.long, device=keys.device)
    groups.scatter_(1, keys.argsort(dim=1), ordered.expand(n, num_tokens))
    if cfg.full_sample_prob > 0:
        groups = torch.where((full < cfg.full_sample_prob)[:, None], torch.ones_like(groups), groups)
    return groups


def draw_extra(cfg: MixConfig, process, n: int, num_tokens: int, generator, device) -> dict[str, torch.Tensor]:
    """The draws mixing adds after the plain ones: times and teacher-offset uniforms of groups 1.., permutation keys,
    full-sample uniforms. All are drawn whatever the options, so that switching DTS or the teacher time on or off
    keeps the other draws the same."""
    extra = len(cfg.ratios()) - 1
    t_more = torch.stack([process.draw_time(n, generator, device) for _ in range(extra)], dim=1)  # (n, G - 1)
    u_more = torch.rand((n, extra), generator=generator, device=device)
    keys = torch.rand((n, num_tokens), generator=generator, device=device)
    full = torch.rand(n, generator=generator, device=device)
    return {"t_more": t_more, "u_more": u_more, "groups": draw_groups(cfg, n, num_tokens, keys, full)}


def group_times(cfg: MixConfig, t: torch.Tensor, draws: dict) -> torch.Tensor:
    """Times per group (N, G): t for group 0, the extra draws for the others with DTS, else t for all."""
    if not cfg.dual_time_scheduling:
        return t[:, None].expand(-1, draws["t_more"].shape[1] + 1)
    return torch.cat([t[:, None], draws["t_more"].to(t.dtype)], dim=1)


def teacher_view(cfg: MixConfig, process, offsets: torch.Tensor, t_groups: torch.Tensor, groups: torch.Tensor):
    """What the teacher sees, as (per-token times of its input (N, T), time fed to its embedder: (N,) or per token as
    `TokenTimes`, group ids for its attention or None). `offsets` (N, G) are the SRA offsets k_g."""
    if cfg.teacher_t in ("same", "sra"):
        t_teacher = TokenTimes(t_groups if cfg.teacher_t == "same" else process.lower(t_groups, offsets), groups)
        return t_teacher.per_token(), t_teacher, groups
    t_min = t_groups.min(dim=1).values  # self_flow: the least noisy of the student's times
    if not cfg.teacher_mask:
        return t_min[:, None].expand_as(groups), t_min, None
    # As the authors' code: group 0 at t_min, the other groups' patches clean (the process's clean time), the embedder
    # told t_min everywhere.
    t_tok = torch.where(groups == 0, t_min[:, None], torch.full_like(t_min, process.clean_time)[:, None])
    return t_tok, t_min, groups
