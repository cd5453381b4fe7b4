"""`python -m softpick.analysis --model-dir ... --data-dir ... --out-json ... --out-npz ...`"""
from .analyze import main

raise SystemExit(main())
