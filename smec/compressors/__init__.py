"""Compressors behind one interface (see :mod:`smec.compressors.base`)."""
from smec.compressors.base import Compressor, load_compressor
from smec.compressors.pca import PCA
from smec.compressors.adapter import AdapterCompressor, Stage
from smec.compressors.truncation import Truncation

__all__ = ["Compressor", "PCA", "AdapterCompressor", "Stage", "Truncation", "load_compressor"]
