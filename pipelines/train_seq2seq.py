"""`python pipelines/train_seq2seq.py [args]`: runs tinylm.pipeline.stages.train_seq2seq, a DVC stage."""

import sys

from tinylm.pipeline.stages.train_seq2seq import main

if __name__ == "__main__":
    main(sys.argv[1:])
