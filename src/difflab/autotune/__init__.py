"""The quality-budgeted autotuner: the fastest configuration of a model on this machine that
stays within a stated quality budget (`difflab accelerate`)."""

from difflab.autotune.budget import Budget, Constraint, parse_budget
from difflab.autotune.search import Evaluation, SearchResult, successive_halving
from difflab.autotune.space import Candidate, Space, ablations
from difflab.autotune.store import EvaluationStore

__all__ = ["Budget", "Candidate", "Constraint", "Evaluation", "EvaluationStore", "SearchResult",
           "Space", "ablations", "parse_budget", "successive_halving"]
