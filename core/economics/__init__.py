"""What ML work costs here and in the cloud, and when buying hardware pays for itself.

Every figure is a `Figure`: a value, where it came from (measured, the ledger, a live offer, the
user's config, or a default), when, and a range where the inputs are uncertain.
"""
