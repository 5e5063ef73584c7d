"""`python pipelines/tokenize_data.py [args]`: runs tinylm.pipeline.stages.tokenize_data, a DVC stage."""

import sys

from tinylm.pipeline.stages.tokenize_data import main

if __name__ == "__main__":
    main(sys.argv[1:])
