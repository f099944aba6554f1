"""vgg-deploy: a folder of labelled images to deployable, measured VGG16 models."""

__version__ = "0.1.0"
