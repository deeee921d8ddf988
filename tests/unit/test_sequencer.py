"""S3 event sequencers of different lengths: S3's event message documentation says to
right-pad the shorter with zeros, then compare lexicographically."""

from ragline.ingest.pipeline import sequencer_newer


def test_sequencers_of_different_lengths_compare_right_padded():
    # left-padding (the old rule) made the longer one always win: this newer, shorter one lost
    assert sequencer_newer("0062E99A88DC4075", "0062E99A88DC407460")
    assert not sequencer_newer("0062E99A88DC407460", "0062E99A88DC4075")
    assert sequencer_newer("0062E99A88DC407500", "0062E99A88DC4074")
    assert not sequencer_newer("0062E99A88DC4075", "0062E99A88DC407500")  # equal once padded
    assert sequencer_newer("0a", "09") and not sequencer_newer("09", "0A")  # case-insensitive hex
