"""smec — make retrieval embeddings small without losing their quality.

The library (torch + numpy + pyarrow; never Ray): BEIR data, metrics, losses, ADS, S-XBM,
the SMRL stage trainer and the compressors. The Ray jobs live in the top-level folders
``pipelines/``, ``tune/`` and ``cluster/`` and import as ``smec.pipelines``, ``smec.tune`` and
``smec.cluster`` (pyproject's package-dir); ``smec`` is the only top-level name installed.
"""
from pathlib import Path as _Path

__version__ = "0.1.0"

# Run from a checkout (also Ray's working_dir copy of one, where this folder shadows the
# installed package), the job folders sit beside this one: let smec.pipelines etc. find them.
_root = _Path(__file__).resolve().parent.parent
if not (_root / "smec" / "pipelines").exists() and (_root / "pipelines" / "__init__.py").is_file():
    __path__.append(str(_root))  # noqa: F821 - a package's __path__
del _Path, _root
