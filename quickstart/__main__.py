"""`python -m quickstart`: see quickstart/pipeline.py (or --help)."""

from .pipeline import main

if __name__ == "__main__":
    raise SystemExit(main())
