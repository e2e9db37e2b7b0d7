"""The run spec and its promises: resolved once (CLI, --dry-run and `sra bench` make the same spec), the process
carried as an object named by the spec, terms that register from outside src/ and own their parameters, training
bit-identical to the commit before the run-spec change, and x-prediction as a new process axis."""
import dataclasses
import json

import pytest
import torch
import torch.nn as nn

from sra import process as processes
from sra.checkpoint import load_checkpoint
from sra.cli import main
from sra.objectives import TERMS, register
from sra.objectives.objective import Objective
from sra.options import option
from sra.process.flow import FlowConfig, FlowProcess, x_to_velocity
from sra.process.flow_path import interpolate

from conftest import assert_three_step_reference

TINY = ["--data-dir", "digits", "--batch-size", "16", "--log-every", "1", "--sample-every", "1000",
        "--sample-steps", "2", "--no-progress", "--report-to", "none"]


def train(tmp_path, name, *args):
    assert main(["train", *TINY, "--output-dir", str(tmp_path), "--exp-name", name, *args]) == 0
    return tmp_path / name


@pytest.mark.parametrize("model", ["SiT-T/4", "DiT-T/4"])
def test_three_steps_are_bit_identical_to_the_commit_before_the_run_spec(tmp_path, model):
    """The weights of these runs at the commit before this structure (eadcb9e), made by the same command
    (`assert_three_step_reference`)."""
    run = train(tmp_path, "ref", "--model", model, "--depth", "2", "--block-out-s", "1", "--block-out-t", "2",
                "--max-train-steps", "3")
    assert_three_step_reference(load_checkpoint(run / "checkpoints" / "0000003.pt"), model)


# ----------------------------------------------------------------------------------------------------------------
# One spec, resolved once
# ----------------------------------------------------------------------------------------------------------------

def test_config_json_holds_the_process_section_and_dry_run_prints_the_same_spec(tmp_path, capsys):
    args = ["--model", "SiT-T/4", "--path-type", "cosine", "--max-train-steps", "1"]
    assert main(["train", *TINY, "--output-dir", str(tmp_path), "--exp-name", "a", *args, "--dry-run"]) == 0
    shown = json.loads(capsys.readouterr().out)
    run = train(tmp_path, "a", *args)
    saved = json.loads((run / "config.json").read_text())
    assert saved["process"] == {"name": "flow", "path": "cosine", "time_sampling": "uniform", "lognormal_mean": 0.0,
                                "lognormal_std": 1.0, "prediction": "velocity"}
    assert shown == saved
    assert load_checkpoint(run / "checkpoints" / "0000001.pt")["config"] == saved
    dit = json.loads((train(tmp_path, "d", "--model", "DiT-T/4", "--max-train-steps", "1") / "config.json").read_text())
    assert dit["process"] == {"name": "ddpm"}


def test_bench_resolves_with_the_function_train_uses():
    """`sra bench`'s spec is `resolve_spec`'s for the same options: the bench carries no defaults of its own."""
    from sra.train.bench import BenchConfig, bench_spec
    from sra.train.config import DataShape, resolve_spec

    cfg = BenchConfig(model="DiT-T/4", input_size=8, in_channels=1, num_classes=10, batch_size=4)
    flags = {"model": "DiT-T/4", "batch_size": 4, "seed": 0, "report_to": "none", "mixed_precision": "no",
             "compile": False, "align": {"weight": 0.5}, "repa": {"projector_dim": 2048}}
    direct, _ = resolve_spec(flags, data=DataShape((1, 8, 8), 10, 4))
    assert bench_spec(cfg, "cpu").to_dict() == direct.to_dict()
    assert direct.term("align").block_out_t == 4 and direct.term("align").distance == "sml1"  # DiT-T's row


def test_the_spec_is_frozen_and_the_loop_refuses_an_unresolved_one():
    from sra.train.config import TrainConfig
    from sra.train.loop import train as loop_train

    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    with pytest.raises(ValueError, match="resolved run spec"):
        loop_train(cfg)


def test_a_process_option_for_another_process_is_refused_in_one_line():
    with pytest.raises(ValueError, match="--prediction applies to the flow process only; DiT-T/4 trains with the ddpm"):
        from sra.train.config import TrainConfig
        TrainConfig.from_dict({"model": "DiT-T/4", "process": {"prediction": "x"}})


def test_an_old_spec_with_a_flow_section_reads_as_its_process():
    from sra.train.config import TrainConfig

    old = {"model": "SiT-T/4", "flow": {"path": "cosine", "time_sampling": "lognormal"}}
    assert processes.section_of(TrainConfig.from_dict(old).process) == {
        "name": "flow", "path": "cosine", "time_sampling": "lognormal", "lognormal_mean": 0.0, "lognormal_std": 1.0,
        "prediction": "velocity"}
    assert processes.section_of(TrainConfig.from_dict({"model": "DiT-T/4", "flow": {"path": "linear"}}).process) == {
        "name": "ddpm"}


# ----------------------------------------------------------------------------------------------------------------
# Open terms: one defined here, with a parameter, registers, trains, resumes and is logged without touching src/
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig:
    weight: float = option(0.0, flag="--toy-weight", group="toy term (tests)", help="toy term weight; 0: off")
    block: int = option(1, flag="--toy-block", help="student block it reads")

    @property
    def active(self) -> bool:
        return self.weight > 0


class Toy:
    """(scale * mean token - 1)^2 per sample: a term with one parameter of its own."""
    name, Config, unset, student_parts = "toy", ToyConfig, ToyConfig(), ()
    bench = dict(weight=0.5)  # what `sra bench --methods toy` times

    @staticmethod
    def resolve(cfg, preset):
        return cfg

    @staticmethod
    def validate(cfg, spec):
        if cfg.active and not 1 <= cfg.block <= spec.model_depth:
            raise ValueError(f"--toy-block {cfg.block} outside 1..{spec.model_depth}")

    def __init__(self, cfg, objective, resources):
        self.cfg, self.depth = cfg, cfg.block
        self.module = nn.Linear(1, 1, bias=False)
        nn.init.constant_(self.module.weight, 0.5)

    def weight(self, epoch, input_size):
        return self.cfg.weight

    def __call__(self, b):
        m = b.tokens[self.depth].float().mean(dim=(1, 2), keepdim=False)[:, None]  # (N, 1)
        return (self.module(m)[:, 0] - 1) ** 2


@pytest.fixture
def toy_term():
    register(Toy)
    yield Toy
    TERMS.pop("toy")


def test_a_term_defined_outside_src_trains_resumes_and_is_logged(tmp_path, toy_term):
    args = ["--model", "SiT-T/4", "--sra-weight", "0", "--toy-weight", "0.5", "--toy-block", "2",
            "--checkpoint-every", "2"]
    straight = train(tmp_path, "straight", *args, "--max-train-steps", "4")
    train(tmp_path, "resumed", *args, "--max-train-steps", "2")
    resumed = train(tmp_path, "resumed", *args, "--max-train-steps", "4")
    a = load_checkpoint(straight / "checkpoints" / "0000004.pt")
    b = load_checkpoint(resumed / "checkpoints" / "0000004.pt")
    assert a["config"]["toy"] == {"weight": 0.5, "block": 2}
    assert set(a["terms"]) == {"toy.weight"} and not any(k.startswith("toy") for k in a["model"])
    assert a["terms"]["toy.weight"].item() != 0.5  # trained
    assert torch.equal(a["terms"]["toy.weight"], b["terms"]["toy.weight"])
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    rows = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert all("toy" in r and "align" not in r for r in rows)
    assert rows[-1]["loss"] == pytest.approx(rows[-1]["denoise"] + 0.5 * rows[-1]["toy"], rel=1e-6)


def test_a_registered_term_gets_its_flags_and_is_refused_by_its_own_validation(tmp_path, toy_term, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--toy-weight" in capsys.readouterr().out
    rc = main(["train", *TINY, "--output-dir", str(tmp_path), "--toy-weight", "1", "--toy-block", "9"])
    assert rc != 0 and "--toy-block 9 outside 1..6" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_bench_and_dry_run_take_a_registered_term(tmp_path, toy_term, capsys):
    from sra.train.bench import BenchConfig, bench_spec, method_names

    assert "toy" in method_names()
    spec = bench_spec(BenchConfig(model="SiT-T/4", input_size=8, in_channels=1, num_classes=10), "cpu", "toy")
    assert spec.term("toy").active and not spec.term("align").active
    assert main(["train", *TINY, "--output-dir", str(tmp_path), "--toy-weight", "0.25", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["toy"] == {"weight": 0.25, "block": 1}


def test_the_objective_iterates_the_registry_and_refuses_an_unknown_term():
    with pytest.raises(ValueError, match="unknown term 'nope'"):
        Objective(FlowProcess(), {"nope": object()})


# ----------------------------------------------------------------------------------------------------------------
# x-prediction: the flow process's new axis
# ----------------------------------------------------------------------------------------------------------------

def test_lognormal_times_take_the_dts_as_mean_and_std():
    """SiT-SRA_DTS_AS loss.py draws sigma = exp(0.847 + 0.8 N(0, 1)) (its SRALoss defaults, not passed by train.py);
    --lognormal-mean 0.847 --lognormal-std 0.8 reproduces it; the defaults keep SiT-SRA's exp(N(0, 1)) bit for bit."""
    from sra.process.flow_path import sample_time

    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    z = torch.randn(20000, generator=g())
    dts = FlowProcess(FlowConfig(time_sampling="lognormal", lognormal_mean=0.847, lognormal_std=0.8))
    sigma = (0.847 + 0.8 * z).exp()
    torch.testing.assert_close(dts.draw_time(20000, g(), "cpu"), sigma / (1 + sigma))
    assert torch.equal(FlowProcess(FlowConfig(time_sampling="lognormal")).draw_time(20000, g(), "cpu"),
                       sample_time("lognormal", "linear", 20000, generator=g()))
    with pytest.raises(ValueError, match="--lognormal-std"):
        from sra.train.config import resolve_spec, DataShape
        resolve_spec({"process": {"lognormal_std": 0.0}}, data=DataShape((1, 8, 8), 10, 64))


def test_x_to_velocity_is_the_velocity_of_the_clean_image_where_sigma_is_not_clamped():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(64, 1, 4, 4, generator=g), torch.randn(64, 1, 4, 4, generator=g)
    for path in ("linear", "cosine"):
        t = torch.rand(64, generator=g) * 0.9 + 0.1  # sigma(t) >= 0.05 on both paths
        xt, v = interpolate(path, x0, noise, t)
        torch.testing.assert_close(x_to_velocity(path, x0, xt, t), v, rtol=1e-5, atol=1e-5)
        xt2, target = FlowProcess(FlowConfig(path=path, prediction="x")).corrupt(x0, noise, t)
        torch.testing.assert_close(target, v, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xt2, xt)


class Oracle(nn.Module):
    """The exact denoiser of a one-point data distribution x0 = c: x-prediction outputs c; velocity prediction, on
    the linear path, -c + (x_t - (1 - t) c) / max(t, 0.05) (= (x_t - c) / t for t >= 0.05, and JiT's clamp below)."""

    def __init__(self, c, prediction):
        super().__init__()
        self.c, self.prediction, self.num_classes = c, prediction, 3
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y):
        c = self.c.expand_as(x).to(x.dtype)
        t = t.reshape(-1, 1, 1, 1).to(x.dtype)
        return c if self.prediction == "x" else -c + (x - (1 - t) * c) / t.clamp_min(0.05)


def test_x_prediction_samples_through_the_velocity_samplers():
    """The ODE from an exact x-predictor lands on the data point; the SDE equals the SDE of the closed-form velocity
    field with the same noise."""
    c = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    noise, y = torch.randn(5, 1, 4, 4, generator=torch.Generator().manual_seed(1)), torch.zeros(5, dtype=torch.long)
    x_process = FlowProcess(FlowConfig(prediction="x"))
    x = x_process.sample(Oracle(c, "x"), noise, y, mode="ode", num_steps=20)
    torch.testing.assert_close(x, c.expand_as(x), rtol=1e-4, atol=1e-4)

    def gens():
        return [torch.Generator().manual_seed(i) for i in range(5)]

    sde = x_process.sample(Oracle(c, "x"), noise, y, mode="sde", num_steps=20, generator=gens())
    reference = FlowProcess().sample(Oracle(c, "velocity"), noise, y, mode="sde", num_steps=20, generator=gens())
    torch.testing.assert_close(sde, reference, rtol=1e-5, atol=1e-5)
    # a velocity process given the same x-predicting network samples something else: the spec decides
    wrong = FlowProcess(FlowConfig()).sample(Oracle(c, "x"), noise, y, mode="ode", num_steps=20)
    assert (wrong - c).abs().max() > 0.5


def test_x_prediction_trains_resumes_and_samples_as_its_spec_says(tmp_path):
    from sra.generate import SamplerOptions, process_of, sample_images
    from sra.models.loading import load_model

    args = ["--model", "SiT-T/4", "--prediction", "x", "--checkpoint-every", "2"]
    straight = train(tmp_path, "x", *args, "--max-train-steps", "4")
    train(tmp_path, "xr", *args, "--max-train-steps", "2")
    resumed = train(tmp_path, "xr", *args, "--max-train-steps", "4")
    a, b = (load_checkpoint(r / "checkpoints" / "0000004.pt") for r in (straight, resumed))
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    loaded = load_model(straight)
    process = process_of(loaded)
    assert loaded.process["prediction"] == "x" and process.config.prediction == "x"
    opts = SamplerOptions(mode="ode", num_steps=3, cfg_scale=1.0).resolve(process)
    y = torch.tensor([0, 1])
    ours = sample_images(loaded, process, opts, 0, [0, 1], y, lambda x: x)
    as_velocity = sample_images(loaded, processes.build({"name": "flow"}), opts, 0, [0, 1], y, lambda x: x)
    assert not torch.allclose(ours, as_velocity)
    out = tmp_path / "grid.png"
    assert main(["sample", str(straight), "--mode", "ode", "--steps", "2", "--cfg-scale", "1", "--output",
                 str(out)]) == 0 and out.is_file()


def test_x_prediction_is_refused_by_the_diffusers_sit_export_before_anything_is_written(tmp_path, capsys):
    run = train(tmp_path, "x", "--model", "SiT-T/4", "--prediction", "x", "--max-train-steps", "1")
    out = tmp_path / "hf"
    assert main(["export", str(run), "--format", "diffusers", "--output", str(out)]) != 0
    assert "predicts x" in capsys.readouterr().err and not out.exists()


def test_a_sampler_option_of_another_process_is_refused_not_ignored():
    from sra.generate import SamplerOptions
    from sra.process import DDPMProcess

    with pytest.raises(ValueError, match="--heun applies to the flow process only; this model samples with the ddpm"):
        SamplerOptions(heun=True).resolve(DDPMProcess())
    with pytest.raises(ValueError, match="--cfg-channels applies to the ddpm process only"):
        SamplerOptions(cfg_channels="all").resolve(FlowProcess())
    assert SamplerOptions(cfg_channels="all").resolve(DDPMProcess()).cfg_channels == "all"
    assert set(FlowProcess.sampler_options) == {"heun", "sde_diffusion"} and DDPMProcess.sampler_options == (
        "cfg_channels",)
