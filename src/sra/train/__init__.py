"""Training: the run spec (config.py: `TrainConfig`, `resolve_spec`), the defaults table and recipes, the step
(step.py) that the loop (loop.py: `train`) and the benchmark (bench.py) run, EMA, run folder, tracking, DDP/FSDP."""
