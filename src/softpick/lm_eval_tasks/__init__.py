"""lm-eval task templates for softpick.evaluate (rendered into a temporary include dir at run time)."""
