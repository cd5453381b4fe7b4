"""python -m softpick.quantize MODEL_DIR --method M --bits B --out OUT.json"""
import sys

from . import main

sys.exit(main())
