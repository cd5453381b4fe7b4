"""Softpick: rectified-softmax attention, the models that use it and the paper's pipeline."""
__version__ = "0.1.0"
