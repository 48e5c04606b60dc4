"""smec — make retrieval embeddings small without losing their quality.

The library (torch + numpy + pyarrow; never Ray): BEIR data, metrics, losses, ADS, S-XBM,
the SMRL stage trainer and the compressors. The Ray jobs live in ``pipelines/``.
"""
__version__ = "0.1.0"
