"""The A/B Router (being built: its RPCs answer UNIMPLEMENTED until its servicer lands)."""
