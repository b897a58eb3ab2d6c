"""Training: public and expert (coordinated) and dense training, router embeddings, expert files, router ablations,
and assembling experts into one mixture-of-experts."""
