"""`python pipelines/sft.py [args]`: runs tinylm.pipeline.stages.sft, a DVC stage."""

import sys

from tinylm.pipeline.stages.sft import main

if __name__ == "__main__":
    main(sys.argv[1:])
