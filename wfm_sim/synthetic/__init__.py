"""Synthetic data products: imagined datasets with provenance (:mod:`~wfm_sim.synthetic.generate`),
their quality and diversity (:mod:`~wfm_sim.synthetic.quality`), and whether they help a
downstream model (:mod:`~wfm_sim.synthetic.downstream`)."""
