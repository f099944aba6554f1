"""The prune step: a finetune run -> a narrower run with the same contract (see pipeline).

scores (which channels matter: L1, L2, Taylor), surgery (removing them, with Torch-Pruning's dependency graph),
targets (how far: MACs or measured speed-up), distill (the teacher's loss), latency (timing candidates),
recovery (training after a step), pipeline (steps, resume, the report).
"""

from vgg_deploy.prune.pipeline import PruneConfig, prune

__all__ = ["PruneConfig", "prune"]
