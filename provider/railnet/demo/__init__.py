"""``railnet demo``: the seed topology on a local lab, checked as it goes."""
