"""`python pipelines/train_tokenizer.py [args]`: runs tinylm.pipeline.stages.train_tokenizer, a DVC stage."""

import sys

from tinylm.pipeline.stages.train_tokenizer import main

if __name__ == "__main__":
    main(sys.argv[1:])
