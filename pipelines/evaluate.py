"""`python pipelines/evaluate.py [args]`: runs tinylm.pipeline.stages.evaluate, a DVC stage."""

import sys

from tinylm.pipeline.stages.evaluate import main

if __name__ == "__main__":
    main(sys.argv[1:])
