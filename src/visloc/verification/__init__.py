"""Geometric verification of retrieval shortlists (Publication IV, verification half): RANSAC inliers,
cyclically consistent matches and the scores that re-rank a shortlist."""

from .scores import (
    FUSIONS,
    PAPER_BETA,
    PairVerification,
    VerificationConfig,
    consistency_score,
    fused_score,
    verify_matches,
)

__all__ = [
    "FUSIONS",
    "PAPER_BETA",
    "PairVerification",
    "VerificationConfig",
    "consistency_score",
    "fused_score",
    "verify_matches",
]
