"""How far a world model can be trusted: open-loop fidelity against its real simulator
(:mod:`~wfm_sim.evaluation.fidelity`), heads read along real episodes
(:mod:`~wfm_sim.evaluation.replay`), and policies scored in both worlds from the same start states
(:mod:`~wfm_sim.evaluation.scoring`, :mod:`~wfm_sim.evaluation.agreement`)."""
