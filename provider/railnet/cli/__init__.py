"""Every argument parser of the ``railnet`` command and what it prints; the logic lives in the
other rooms."""
