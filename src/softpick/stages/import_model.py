"""import: the released fla checkpoint of config models_from.<variant> instead of training (softpick.importer).
The rule is import_model: a rule cannot be named `import`."""
from __future__ import annotations

from .base import Job, Stage, manifest_files


def run(job: Job):
    from ..importer import import_stage

    import_stage(job.config, job.variant, job.model_dir, job.data_dir)
    return manifest_files(job.model_dir)


STAGE = Stage("import", "import the fla checkpoint of config models_from.<variant> instead of training "
              "(softpick.importer)", run, sections=("models_from", "model", "train"), variant=True, rule="import_model")
