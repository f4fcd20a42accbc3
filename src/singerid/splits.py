"""The split vocabulary of a catalog and a store (the paper's section III-A), and the test groups of the protocols.

Seen singers' tracks are split 8:2 into train and val; seen test singers have further `test_seen` tracks, never
trained on; unseen singers have `test_unseen` tracks only and are never trained on at all.
"""

from __future__ import annotations

TRAIN = "train"
VAL = "val"
TEST_SEEN = "test_seen"
TEST_UNSEEN = "test_unseen"
SPLITS = (TRAIN, VAL, TEST_SEEN, TEST_UNSEEN)
TRAINING_SPLITS = (TRAIN, VAL)  # learned from, or used to choose the best checkpoint
TEST_SPLITS = (TEST_SEEN, TEST_UNSEEN)

SEEN = "seen"
UNSEEN = "unseen"
GROUP_OF_SPLIT = {TEST_SEEN: SEEN, TEST_UNSEEN: UNSEEN}  # the protocols' test groups
GROUPS = (SEEN, UNSEEN)
