"""`python pipelines/classify.py [args]`: runs tinylm.pipeline.stages.classify, a DVC stage."""

import sys

from tinylm.pipeline.stages.classify import main

if __name__ == "__main__":
    main(sys.argv[1:])
