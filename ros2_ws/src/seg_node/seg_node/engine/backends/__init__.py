"""Inference backends behind one interface (see base.Backend); each imports its library lazily."""
