"""Compressors behind one interface (see :mod:`smec.compressors.base`)."""
from smec.compressors.adapter import AdapterCompressor, Stage
from smec.compressors.base import Compressor, load_compressor
from smec.compressors.concatenation import ConcatCompressor, concatenate
from smec.compressors.pca import PCA
from smec.compressors.truncation import Truncation

__all__ = ["PCA", "AdapterCompressor", "Compressor", "ConcatCompressor", "Stage", "Truncation",
           "concatenate", "load_compressor"]
