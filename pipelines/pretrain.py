"""`python pipelines/pretrain.py [args]`: runs tinylm.pipeline.stages.pretrain, a DVC stage."""

import sys

from tinylm.pipeline.stages.pretrain import main

if __name__ == "__main__":
    main(sys.argv[1:])
