"""How far a world model can be trusted: open-loop fidelity against its real simulator
(:mod:`~wfm_sim.evaluation.fidelity`), policies scored in both worlds from the same start states
(:mod:`~wfm_sim.evaluation.scoring`, :mod:`~wfm_sim.evaluation.agreement`), and plans chosen in
imagination and executed in reality (:mod:`~wfm_sim.evaluation.planning`)."""
