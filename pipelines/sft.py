"""`python pipelines/sft.py [args]`: runs tinylm.pipeline.stages.sft, a DVC stage."""

import sys

from tinylm.ctrl_c import stage_main
from tinylm.pipeline.stages.sft import main

if __name__ == "__main__":
    stage_main(main, sys.argv[1:])
