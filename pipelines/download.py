"""`python pipelines/download.py [args]`: runs tinylm.pipeline.stages.download, a DVC stage."""

import sys

from tinylm.ctrl_c import stage_main
from tinylm.pipeline.stages.download import main

if __name__ == "__main__":
    stage_main(main, sys.argv[1:])
