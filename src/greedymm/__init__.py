"""greedymm: find and cure greedy learning in multi-modal neural networks.

Implements Wu, Jastrzebski, Cho and Geras, "Characterizing and Overcoming the Greedy Nature of Learning in
Multi-modal Deep Neural Networks" (ICML 2022): the conditional utilization rate, the conditional learning
speed, and the balanced multi-modal learning algorithm.
"""

# the public API for your own model and loop (docs/OWN_CODE.md); names here are stable
from . import diagnose  # greedymm.diagnose(data, model=None, ...): is the model greedy (docs/DIAGNOSE.md)
from .api import Balancer, Batches, StepLog, intermediate_fusion, late_fusion
from .config import TrainConfig, resolve_config
from .evaluate import evaluate, evaluate_batches
from .models import MultiModalNet, Output, build_model, count_parameters
from .train import fit
from .version import __version__

__all__ = [
    "Balancer",
    "Batches",
    "MultiModalNet",
    "Output",
    "StepLog",
    "TrainConfig",
    "__version__",
    "build_model",
    "count_parameters",
    "diagnose",
    "evaluate",
    "evaluate_batches",
    "fit",
    "intermediate_fusion",
    "late_fusion",
    "resolve_config",
]
