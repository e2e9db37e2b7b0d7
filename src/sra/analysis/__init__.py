"""Analysis of trained models and runs: linear probes per block and noise level (probe.py, `sra probe`), PCA maps of
the tokens (pca.py, `sra pca`) and training curves from run folders (curves.py, `sra plot`). The modules are imported
where they are used (`from sra.analysis.probe import linear_probe`), so that importing the package loads nothing."""
