"""Training: episodes from the scenarios' train split, augmented and packed into shards,
and the loop that fits the interaction model to them."""
