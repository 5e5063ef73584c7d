"""`python pipelines/sft.py [args]`: runs tinylm.pipeline.stages.sft, a DVC stage."""

import sys

import _checkout  # noqa: F401  (this checkout's src/ first on sys.path)

from tinylm.ctrl_c import stage_main
from tinylm.pipeline.stages.sft import main

if __name__ == "__main__":
    stage_main(main, sys.argv[1:])
