"""Files that `sra export --format diffusers` copies into a SiT export, so that diffusers loads it without sra:
`pipeline_sit.py` (SiTPipeline: our Euler ODE / Euler-Maruyama SDE samplers with the guidance interval, VAE decoding)
at the folder's top and `modeling_sit.py` (SiTTransformer2DModel, a ModelMixin with sra's parameter names) in its
`transformer/` folder. They import only torch and diffusers; tests/test_export.py holds them to sra's model and
samplers."""
