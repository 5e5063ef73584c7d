"""`python pipelines/summarize.py [args]`: runs tinylm.pipeline.stages.summarize, a DVC stage."""

import sys

from tinylm.pipeline.stages.summarize import main

if __name__ == "__main__":
    main(sys.argv[1:])
