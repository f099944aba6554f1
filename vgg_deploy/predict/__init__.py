"""The predict step: classify images with any artifact of a run, through the run's own preprocessing."""

from vgg_deploy.artifacts.choice import ArtifactChoice, choose_artifact
from vgg_deploy.predict.classify import Predictions, PredictOptions, predict

__all__ = ["ArtifactChoice", "PredictOptions", "Predictions", "choose_artifact", "predict"]
