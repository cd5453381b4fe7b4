"""Softpick: rectified-softmax attention, the models that use it and the paper's pipeline.

Importing the package registers the model with transformers' Auto classes, so after `import softpick`
the plain `AutoModelForCausalLM.from_pretrained(model_dir)` loads an exported model (without
trust_remote_code; the exported directory also carries its own code for processes without softpick).
"""
__version__ = "0.1.0"

from . import model as _model  # noqa: E402,F401  (AutoConfig / AutoModelForCausalLM registration)
