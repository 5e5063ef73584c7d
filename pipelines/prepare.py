"""`python pipelines/prepare.py [args]`: runs tinylm.pipeline.stages.prepare, a DVC stage."""

import sys

from tinylm.pipeline.stages.prepare import main

if __name__ == "__main__":
    main(sys.argv[1:])
