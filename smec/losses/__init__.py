"""One loss per file; each docstring gives the formula and the paper."""
from smec.losses.distill import SimilarityDistillationLoss
from smec.losses.infonce import InfoNCELoss
from smec.losses.matryoshka import MatryoshkaLoss
from smec.losses.matryoshka_adaptor import MatryoshkaAdaptorLoss
from smec.losses.objective import CompressionObjective
from smec.losses.rank import RankLoss
from smec.losses.similarity import SimilarityPreservationLoss

__all__ = ["CompressionObjective", "InfoNCELoss", "MatryoshkaAdaptorLoss", "MatryoshkaLoss",
           "RankLoss", "SimilarityDistillationLoss", "SimilarityPreservationLoss"]
