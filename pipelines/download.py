"""`python pipelines/download.py [args]`: runs tinylm.pipeline.stages.download, a DVC stage."""

import sys

from tinylm.pipeline.stages.download import main

if __name__ == "__main__":
    main(sys.argv[1:])
