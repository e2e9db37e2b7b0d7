"""Options declared once: the TrainConfig dataclass drives the `sra train` flags and the config-file format; presets."""
import dataclasses
import json

import pytest

from sra import options
from sra.cli import build_parser, main
from sra.objectives import TERMS
from sra.train import config
from sra.train.config import DataShape, TrainConfig, option_fields, resolve, resolve_spec
from sra.train.recipes import RECIPES, recipe


def parse(*argv):
    """The spec a command line gives before resolution: the preset, then the config file, then the flags given
    (the order `resolve_spec` merges them in)."""
    args = build_parser().parse_args(["train", *argv])
    return config.given_spec(config.given(args), preset=args.preset, config_file=args.config)


# The flags `sra train` had before the dataclass drove them, written out by hand: (argv, dotted field, value).
LEGACY_FLAGS = [
    (["--sra-weight", "0.2"], "align.weight", 0.2),
    (["--loss-type", "sml1"], "align.distance", "sml1"),
    (["--block-out-s", "5"], "align.block_out_s", 5),
    (["--block-out-t", "7"], "align.block_out_t", 7),
    (["--t-max", "0.3"], "align.t_max", 0.3),
    (["--t-interval", "fixed"], "align.interval", "fixed"),
    (["--no-head"], "align.use_head", False),
    (["--teacher", "online"], "align.teacher", "online"),
    (["--teacher-bf16"], "align.teacher_bf16", True),
    (["--no-teacher-bf16"], "align.teacher_bf16", False),
    (["--legacy-epoch-decay"], "align.legacy_epoch_decay", True),
    (["--path-type", "cosine"], "process.path", "cosine"),
    (["--weighting", "lognormal"], "process.time_sampling", "lognormal"),
    (["--ema-warmup"], "ema_warmup", True),
    (["--no-ema-warmup"], "ema_warmup", False),
    (["--no-progress"], "progress", False),
    (["--compile"], "compile", True),
    (["--fsdp"], "fsdp", True),
    (["--activation-checkpointing"], "activation_checkpointing", True),
    (["--mixed-precision", "bf16"], "mixed_precision", "bf16"),
    (["--model", "DiT-B/2"], "model", "DiT-B/2"),
    (["--data-dir", "digits"], "data_dir", "digits"),
    (["--num-classes", "7"], "num_classes", 7),
    (["--output-dir", "x"], "output_dir", "x"),
    (["--exp-name", "y"], "exp_name", "y"),
    (["--batch-size", "32"], "batch_size", 32),
    (["--grad-accum", "2"], "grad_accum", 2),
    (["--max-train-steps", "9"], "max_train_steps", 9),
    (["--lr", "3e-4"], "lr", 3e-4),
    (["--lr-warmup-steps", "5"], "lr_warmup_steps", 5),
    (["--weight-decay", "0.01"], "weight_decay", 0.01),
    (["--max-grad-norm", "2"], "max_grad_norm", 2.0),
    (["--ema-decay", "0.99"], "ema_decay", 0.99),
    (["--ema-half-life-kimg", "3.2"], "ema_half_life_kimg", 3.2),
    (["--seed", "3"], "seed", 3),
    (["--log-every", "4"], "log_every", 4),
    (["--sample-every", "6"], "sample_every", 6),
    (["--sample-steps", "8"], "sample_steps", 8),
    (["--checkpoint-every", "10"], "checkpoint_every", 10),
    (["--eval-every", "11"], "eval_every", 11),
    (["--eval-samples", "12"], "eval_samples", 12),
    (["--num-workers", "2"], "num_workers", 2),
]


def get(cfg, dotted):
    """A dotted option of a spec: a field, a term's (`align.weight`) or the process's (`process.path`; None when
    the spec's process has no such option)."""
    head, _, rest = dotted.partition(".")
    if rest and head in TERMS:
        return getattr(cfg.term(head), rest)
    if rest and head == "process":
        return getattr(cfg.process, rest, None)
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("argv, name, value", LEGACY_FLAGS)
def test_legacy_flags_set_their_field_and_nothing_else(argv, name, value):
    cfg = parse(*argv)
    assert get(cfg, name) == value
    default = TrainConfig()
    # process options are compared where both specs have that process (--model DiT-B/2 changes the process too)
    changed = [k for k in option_fields() if get(cfg, k) != get(default, k)
               and not (k.startswith("process.") and cfg.process_name != default.process_name)]
    assert changed == [name] or get(default, name) == value and changed == []


def test_every_option_has_a_flag_and_no_flags_means_the_dataclass_defaults():
    assert parse() == TrainConfig()
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name, f in option_fields().items():
        assert options.flag_name(f) in help_text, name
    # Each default is said once, and never as "None" (unset defaults are explained in words).
    assert "(default: None)" not in help_text
    assert "(default: 0.2)" in " ".join(help_text.split())  # t_max; the alignment weight is unset (per family)
    for block in help_text.split("\n  --")[1:]:
        assert " ".join(block.split()).count("(default:") <= 1, block


def test_config_file_is_overridden_only_by_flags_actually_given(tmp_path):
    f = tmp_path / "c.yaml"
    # YAML 1.1 reads 1e-4 as a string: it still becomes a float; a list becomes the betas tuple.
    f.write_text("batch_size: 32\nlr: 1e-4\nadam_betas: [0.9, 0.95]\nalign:\n  weight: 0.2\n  distance: sml1\n")
    cfg = parse("--config", str(f))
    assert (cfg.batch_size, cfg.lr, cfg.adam_betas) == (32, 1e-4, (0.9, 0.95))
    align = cfg.term("align")
    assert (align.weight, align.distance, align.block_out_s, align.teacher_bf16) == (0.2, "sml1", 0, None)
    cfg = parse("--config", str(f), "--batch-size", "16", "--sra-weight", "0.5")  # 0.5 is the default: still wins
    assert (cfg.batch_size, cfg.term("align").weight, cfg.term("align").distance) == (16, 0.5, "sml1")
    f.write_text("mix:\n  mask_ratio: [0.3, 0.7]\n")  # a variable-length tuple field of a nested config
    assert parse("--config", str(f)).mix.mask_ratio == (0.3, 0.7)


def test_a_runs_config_json_resolves_to_the_same_config(tmp_path, capsys):
    resolved = resolve(TrainConfig(data_dir="digits", model="SiT-T/2", batch_size=16, adam_betas=(0.8, 0.9)),
                       (1, 8, 8), 10, "cpu")
    (tmp_path / "config.json").write_text(json.dumps(resolved.to_dict(), indent=2))
    assert parse("--config", str(tmp_path / "config.json")) == resolved
    assert main(["train", "--config", str(tmp_path / "config.json"), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == resolved.to_dict()


@pytest.mark.parametrize("text, message", [
    ("bogus: 1\n", "unknown option bogus"),
    ("align: {wieght: 0.2}\n", "unknown option align.wieght"),
    ("batch_size: many\n", "option batch_size: expected int"),
    ("mixed_precision: fp8\n", "--mixed-precision 'fp8' is not one of no, bf16, fp16"),
    ("- 1\n", "must hold a mapping"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    assert main(["train", "--config", str(f), "--data-dir", "digits", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_presets(capsys):
    cfg = parse("--preset", "sit-b2-sra-in256", "--data-dir", "/data/in256", "--max-train-steps", "10")
    # Table 1 of the paper: SiT-B/2 + SRA, global batch 256, lr 1e-4, smooth-L1 with lambda 0.2, blocks 3 -> 8.
    assert (cfg.model, cfg.batch_size, cfg.lr, cfg.mixed_precision) == ("SiT-B/2", 256, 1e-4, "fp16")
    align = cfg.term("align")
    assert (align.distance, align.weight, align.block_out_s, align.block_out_t) == ("sml1", 0.2, 3, 8)
    assert cfg.max_train_steps == 10 and parse("--preset", "sit-b2-sra-in256", "--data-dir", "d").max_train_steps == 400_000
    # 800 epochs of ImageNet-1k's 1,281,167 training images at batch 256 (drop-last epochs).
    assert parse("--preset", "sit-xl2-sra-in256", "--data-dir", "d").max_train_steps == 800 * 5004
    assert parse("--preset", "demo") == TrainConfig()
    with pytest.raises(ValueError, match="needs --data-dir"):  # refused when the spec is resolved
        resolve_spec({}, preset="dit-xl2-sra-in256", data=DataShape((4, 32, 32), 1000, 1_281_167))
    assert main(["train", "--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES) and "Table 1" in out and "--model SiT-XL/2" in out
    assert "    --block-out-t 20: README.md 5.1 --block-out-t=20" in out.splitlines()
    assert "    --block-out-t 16: README.md 5.2 --block-out-t=16" in out.splitlines()
    # REPA's defaults each cite a file and line, the paper, or say they are ours; every preset size has a block
    from sra.models.presets import SIZES
    from sra.objectives.repa import RepaConfig
    from sra.process import PROCESSES
    from sra.train.defaults import REPA_DEFAULTS_FROM, SIZE_DEFAULTS

    # every process has a row, with its REPA block, at every preset size
    assert set(SIZE_DEFAULTS) == {(p, s) for p in PROCESSES for s in SIZES}
    assert all(row.repa_block >= 1 for row in SIZE_DEFAULTS.values())
    repa_sizes = {s for _, s in SIZE_DEFAULTS}
    assert {f"block {s}" for s in repa_sizes} <= {f"block {s}" for key in REPA_DEFAULTS_FROM
                                                  for s in key.removeprefix("block ").split("/")}
    assert {"weight", "projector_dim"} <= set(REPA_DEFAULTS_FROM) and RepaConfig().projector_dim == 2048
    assert all(any(w in why for w in ("line", "paper, not re-checked", "ours")) for why in REPA_DEFAULTS_FROM.values())
    assert "REPA's defaults" in out and "--encoder-depth default 8" in out


def test_every_number_of_a_recipe_says_where_it_comes_from():
    from sra.train.recipes import _flatten

    for name, r in RECIPES.items():
        assert set(r.origin) == set(_flatten(r.config)), name
        # a file of the authors' code or their README; the paper (marked as not re-checked); or marked as ours
        assert all(any(w in why for w in (".py", "README.md", "paper, not re-checked", "ours", "as align.")) for why in
                   r.origin.values()), name


def test_resumable_fields_come_from_the_declarations():
    from sra.train.config import RESUMABLE_CHANGES

    assert {"max_train_steps", "log_every", "num_workers", "progress", "data_dir"} <= RESUMABLE_CHANGES
    assert not {"model", "lr", "batch_size", "seed", "align", "process", *TERMS} & RESUMABLE_CHANGES
    # every option (the spec's fields, the processes' and the terms'; `process` and `terms` hold those configs)
    assert all(f.metadata.get("help") for f in option_fields().values())
    assert {f.name for f in dataclasses.fields(TrainConfig) if not f.metadata.get("help")} == {"process", "terms"}


@pytest.mark.parametrize("name", ["a\nb", "x\x1b[31mred", "r\u202eevil", "tab\there"])
def test_run_names_with_control_characters_are_refused_in_one_escaped_line(tmp_path, capsys, name):
    rc = main(["train", "--data-dir", "digits", "--output-dir", str(tmp_path), "--exp-name", name, "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and len(err.strip().splitlines()) == 1 and "control character U+" in err
    assert not any(c in err for c in ("\x1b", "\u202e", "\t")) and list(tmp_path.iterdir()) == []
